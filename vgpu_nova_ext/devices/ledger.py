#    Licensed under the Apache License, Version 2.0 (the "License"); you may
#    not use this file except in compliance with the License. You may obtain
#    a copy of the License at
#
#         http://www.apache.org/licenses/LICENSE-2.0
#
#    Unless required by applicable law or agreed to in writing, software
#    distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
#    WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
#    License for the specific language governing permissions and limitations
#    under the License.
"""Which device belongs to which consumer: a small SQLite ledger.

Every change to the host is written here first (the intent) and marked
done after, so that after a crash at any point the allocator's
``reconcile()`` can tell what was half done. States:

- ``creating``: about to be created for ``consumer``;
- ``active``: exists and belongs to ``consumer``;
- ``free``: exists, belongs to no one, kept for reuse;
- ``removing``: about to be removed.

The file lives in the state directory, readable by its owner only.
Transactions are ``BEGIN IMMEDIATE`` so that concurrent processes
serialise on the database as well as on the allocator's lock.
"""

import contextlib
import dataclasses
import os
import sqlite3
import time

from vgpu_nova_ext import exception

CREATING = 'creating'
ACTIVE = 'active'
FREE = 'free'
REMOVING = 'removing'
CREATED = 'created'
ADOPTED = 'adopted'

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    gpu TEXT NOT NULL,
    parent TEXT NOT NULL,
    type_id TEXT NOT NULL,
    consumer TEXT,
    state TEXT NOT NULL,
    origin TEXT NOT NULL,
    changed_at REAL NOT NULL,
    orphaned_at REAL
);
CREATE INDEX IF NOT EXISTS devices_consumer ON devices (consumer);
CREATE INDEX IF NOT EXISTS devices_free ON devices (gpu, type_id, state);
CREATE TABLE IF NOT EXISTS links (
    consumer TEXT PRIMARY KEY,
    instance TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS links_instance ON links (instance);
"""
_FIELDS = ('device_id', 'kind', 'gpu', 'parent', 'type_id', 'consumer',
           'state', 'origin', 'changed_at', 'orphaned_at')


@dataclasses.dataclass(frozen=True)
class Entry:
    device_id: str
    kind: str
    gpu: str
    parent: str
    type_id: str
    consumer: str | None
    state: str
    origin: str
    changed_at: float
    orphaned_at: float | None = None


class Ledger:
    """The ledger file of one host."""

    FILE = 'ledger.sqlite'

    def __init__(self, state_path: str) -> None:
        try:
            os.makedirs(state_path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise exception.ConfigError(
                'cannot create the state directory %s: %s; set '
                '[vgpu_nova_ext] state_path to a directory the service can '
                'write' % (state_path, exc.strerror))
        self.path = os.path.join(state_path, self.FILE)
        old_umask = os.umask(0o077)
        try:
            self._db = sqlite3.connect(self.path, timeout=60,
                                       isolation_level=None)
        finally:
            os.umask(old_umask)
        self._db.execute('PRAGMA journal_mode=WAL')
        self._db.execute('PRAGMA synchronous=FULL')
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def transaction(self):
        self._db.execute('BEGIN IMMEDIATE')
        try:
            yield self
        except BaseException:
            self._db.execute('ROLLBACK')
            raise
        self._db.execute('COMMIT')

    # -- reads -------------------------------------------------------------
    def _select(self, where: str = '', args: tuple = (),
                limit: int | None = None) -> list[Entry]:
        rows = self._db.execute(
            'SELECT %s FROM devices %s ORDER BY device_id%s' % (
                ', '.join(_FIELDS), where,
                ' LIMIT %d' % limit if limit is not None else ''),
            args).fetchall()
        return [Entry(*row) for row in rows]

    def all(self) -> list[Entry]:
        return self._select()

    def of_consumer(self, consumer: str) -> list[Entry]:
        return self._select('WHERE consumer = ?', (consumer,))

    def get(self, device_id: str) -> Entry | None:
        found = self._select('WHERE device_id = ?', (device_id,))
        return found[0] if found else None

    def free(self, gpu: str, type_id: str, limit: int) -> list[Entry]:
        return self._select('WHERE gpu = ? AND type_id = ? AND state = ?',
                            (gpu, type_id, FREE), limit=max(limit, 0))

    def count(self, gpu: str, type_id: str) -> int:
        """Devices of a type on a GPU, in any state (index-only)."""
        return self._db.execute(
            'SELECT COUNT(*) FROM devices WHERE gpu = ? AND type_id = ?',
            (gpu, type_id)).fetchone()[0]

    def in_state(self, *states: str) -> list[Entry]:
        return self._select('WHERE state IN (%s)' % ','.join(
            '?' * len(states)), states)

    def linked(self, instance: str) -> list[str]:
        """Consumers (migrations) whose devices belong to ``instance``."""
        return [row[0] for row in self._db.execute(
            'SELECT consumer FROM links WHERE instance = ? ORDER BY '
            'consumer', (instance,))]

    def instance_of(self, consumer: str) -> str | None:
        row = self._db.execute('SELECT instance FROM links WHERE '
                               'consumer = ?', (consumer,)).fetchone()
        return row[0] if row else None

    # -- writes (inside a transaction) --------------------------------------
    def link(self, consumer: str, instance: str) -> None:
        self._db.execute('INSERT OR REPLACE INTO links (consumer, instance) '
                         'VALUES (?, ?)', (consumer, instance))

    def unlink(self, consumer: str) -> None:
        self._db.execute('DELETE FROM links WHERE consumer = ?', (consumer,))

    def add(self, entry: Entry) -> None:
        self._db.execute('INSERT INTO devices (%s) VALUES (%s)' % (
            ', '.join(_FIELDS), ', '.join('?' * len(_FIELDS))),
            dataclasses.astuple(entry))

    def update(self, device_id: str, **changes) -> None:
        changes.setdefault('changed_at', time.time())
        self._db.execute('UPDATE devices SET %s WHERE device_id = ?' % (
            ', '.join('%s = ?' % k for k in changes)),
            tuple(changes.values()) + (device_id,))

    def delete(self, device_id: str) -> None:
        self._db.execute('DELETE FROM devices WHERE device_id = ?',
                         (device_id,))
