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
``reconcile()`` can tell what was half done. States and schema:
:mod:`.ledger_schema`; reading without writing: :mod:`.ledger_reader`.

The file lives in the state directory, readable by its owner only.
Transactions are ``BEGIN IMMEDIATE`` so that concurrent processes
serialise on the database as well as on the allocator's lock.

Threads: nova-compute calls the driver from many threads (native threads
in Nova 34's default mode, green threads under eventlet). The ledger keeps
ONE connection, opened with ``check_same_thread=False``, behind a
re-entrant lock held for each statement and for the whole of a
transaction. One connection rather than one per thread: Nova's thread
pools start and end threads, and a connection per thread would be opened
and leaked with each; every ledger statement is a sub-millisecond index
look-up, so serialising them costs nothing next to the host writes, which
the lock never covers.
"""

import contextlib
import dataclasses
import os
import sqlite3
import threading
import time

from vgpu_nova_ext.devices import ledger_reader
from vgpu_nova_ext.devices import ledger_schema
from vgpu_nova_ext import exception

# The names its users know the ledger by.
CREATING = ledger_schema.CREATING
ACTIVE = ledger_schema.ACTIVE
FREE = ledger_schema.FREE
REMOVING = ledger_schema.REMOVING
CREATED = ledger_schema.CREATED
ADOPTED = ledger_schema.ADOPTED
COUNTERS = ledger_schema.COUNTERS
SCHEMA_VERSION = ledger_schema.SCHEMA_VERSION
Entry = ledger_schema.Entry
ReadOnlyLedger = ledger_reader.ReadOnlyLedger
check_state_dir = ledger_reader.check_state_dir
on_read_only_mount = ledger_reader.on_read_only_mount


class Ledger:
    """The ledger file of one host; safe to share between threads."""

    FILE = ledger_schema.FILE

    def __init__(self, state_path: str) -> None:
        ledger_reader.check_state_dir(state_path)
        self.path = os.path.join(state_path, self.FILE)
        # Created in __init__, not at import: under eventlet this is then
        # the patched (green) lock.
        self._lock = threading.RLock()
        self._commits = 0
        old_umask = os.umask(0o077)
        try:
            self._db = sqlite3.connect(self.path, timeout=60,
                                       isolation_level=None,
                                       check_same_thread=False)
            # Before anything writes (WAL mode changes the file's header):
            # a ledger this release cannot read stays byte for byte.
            self._check_readable()
            self._execute('PRAGMA journal_mode=WAL')
            self._execute('PRAGMA synchronous=FULL')
            self._migrate()
        except sqlite3.Error as exc:
            raise self._error('cannot open', exc)
        finally:
            os.umask(old_umask)

    def _check_readable(self) -> None:
        """Refuse, changing nothing, a ledger this release cannot read."""
        try:
            version = self._db.execute('PRAGMA user_version').fetchone()[0]
            tables = {name: [row[1] for row in self._db.execute(
                'PRAGMA table_info(%s)' % name)]
                for name in ('devices', 'links')}
        except sqlite3.Error:
            self._db.close()
            raise
        problem = None
        if version > SCHEMA_VERSION:
            problem = ('has schema version %d, newer than the %d this '
                       'release knows: it was written by a newer '
                       'vgpu-nova-ext; install that release again (a '
                       'downgrade does not convert the ledger)' % (
                           version, SCHEMA_VERSION))
        for name, wanted in (('devices', list(ledger_schema.FIELDS)),
                             ('links', ['consumer', 'instance'])):
            if tables[name] and tables[name] != wanted:
                problem = ('has a %s table with columns %s, not this '
                           'project\'s (%s): it is not a vgpu-nova-ext '
                           'ledger, or a damaged one; it was left as it is '
                           '(move it away: the next start rebuilds what it '
                           'can from the host and the guests)' % (
                               name, ', '.join(tables[name]),
                               ', '.join(wanted)))
        if problem:
            self._db.close()
            raise exception.LedgerError('the vGPU ledger %s %s' % (
                self.path, problem))

    def _error(self, doing: str, exc: sqlite3.Error) -> exception.LedgerError:
        return exception.LedgerError(
            '%s the vGPU ledger %s: %s; check the file system and the file '
            '(a damaged ledger can be moved away: the next start rebuilds '
            'what it can from the host and the guests)' % (doing, self.path,
                                                           exc))

    def _migrate(self) -> None:
        with self.transaction():
            # (A newer version was refused by _check_readable.)
            version = self._execute('PRAGMA user_version').fetchone()[0]
            for step in ledger_schema.MIGRATIONS[version:]:
                if callable(step):
                    step(self._execute)
                    continue
                for statement in step:
                    self._execute(statement)
            if version != SCHEMA_VERSION:
                # PRAGMA takes no parameters; the value is our constant.
                self._execute('PRAGMA user_version = %d' % SCHEMA_VERSION)

    def version(self) -> tuple[int, int]:
        """A value that changes whenever anyone commits to the ledger.

        This connection's commits are counted here; another process's
        (a ``vgpu-nova-ext reconcile``) show in SQLite's data_version.
        """
        with self._lock:
            return self._commits, self._execute(
                'PRAGMA data_version').fetchone()[0]

    @property
    def schema_version(self) -> int:
        return self._execute('PRAGMA user_version').fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _execute(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            try:
                return self._db.execute(sql, args)
            except sqlite3.Error as exc:
                raise self._error('cannot use', exc)

    def _fetch(self, sql: str, args: tuple = ()) -> list[tuple]:
        # Statement and fetch under one hold of the lock: a cursor shares
        # its connection's state with every other thread's statements.
        with self._lock:
            return self._execute(sql, args).fetchall()

    @contextlib.contextmanager
    def transaction(self):
        """One write transaction; other threads wait until it ends."""
        with self._lock:
            self._execute('BEGIN IMMEDIATE')
            try:
                yield self
            except BaseException:
                self._execute('ROLLBACK')
                raise
            self._execute('COMMIT')
            self._commits += 1

    # -- type names ----------------------------------------------------------
    def type_names(self) -> dict[tuple[str, str], tuple[str, str | None]]:
        """{(GPU, type id): (name, description)} as last read."""
        return {(gpu, type_id): (name, description) for
                gpu, type_id, name, description in self._fetch(
                    'SELECT gpu, type_id, name, description FROM type_names')}

    def remember_type_names(self, names: dict[tuple[str, str],
                                              tuple[str, str | None]]
                            ) -> None:
        """Record these names (replacing what a GPU said before)."""
        with self.transaction():
            for (gpu, type_id), (name, description) in names.items():
                self._execute(
                    'INSERT OR REPLACE INTO type_names (gpu, type_id, name, '
                    'description) VALUES (?, ?, ?, ?)',
                    (gpu, type_id, name, description))

    # -- counters ----------------------------------------------------------
    def count_event(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name`` (one of :data:`COUNTERS`)."""
        if name not in COUNTERS:
            raise ValueError('no counter %r' % name)
        with self.transaction():
            self._execute(
                'INSERT INTO counters (name, value) VALUES (?, ?) ON '
                'CONFLICT(name) DO UPDATE SET value = value + ?',
                (name, n, n))

    def counters(self) -> dict[str, int]:
        """Every counter, 0 for those never counted."""
        found = dict(self._fetch('SELECT name, value FROM counters'))
        return {name: found.get(name, 0) for name in COUNTERS}

    # -- MIG layouts being carved -----------------------------------------
    def mig_intents(self) -> dict[str, str]:
        """{GPU address: layout in mig-parted's words} begun, not done."""
        return dict(self._fetch('SELECT gpu, layout FROM mig_intents'))

    def begin_mig_layout(self, gpu: str, layout: str) -> None:
        with self.transaction():
            self._execute('INSERT OR REPLACE INTO mig_intents (gpu, layout, '
                          'started_at) VALUES (?, ?, ?)',
                          (gpu, layout, time.time()))

    def end_mig_layout(self, gpu: str, layout: str) -> None:
        """The layout is carved: its intent goes, the layout is kept."""
        with self.transaction():
            self._execute('DELETE FROM mig_intents WHERE gpu = ?', (gpu,))
            self._execute('INSERT OR REPLACE INTO mig_layouts (gpu, layout, '
                          'carved_at) VALUES (?, ?, ?)',
                          (gpu, layout, time.time()))

    def mig_layouts(self) -> dict[str, str]:
        """{GPU address: the layout last carved there}."""
        return dict(self._fetch('SELECT gpu, layout FROM mig_layouts'))

    # -- reads -------------------------------------------------------------
    def _select(self, where: str = '', args: tuple = (),
                limit: int | None = None) -> list[Entry]:
        rows = self._fetch(
            'SELECT %s FROM devices %s ORDER BY device_id%s' % (
                ', '.join(ledger_schema.FIELDS), where,
                ' LIMIT %d' % limit if limit is not None else ''),
            args)
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
        return self._fetch(
            'SELECT COUNT(*) FROM devices WHERE gpu = ? AND type_id = ?',
            (gpu, type_id))[0][0]

    def in_state(self, *states: str) -> list[Entry]:
        return self._select('WHERE state IN (%s)' % ','.join(
            '?' * len(states)), states)

    def linked(self, instance: str) -> list[str]:
        """Consumers (migrations) whose devices belong to ``instance``."""
        return [row[0] for row in self._fetch(
            'SELECT consumer FROM links WHERE instance = ? ORDER BY '
            'consumer', (instance,))]

    def links(self) -> dict[str, str]:
        """{consumer (a migration): the instance its devices belong to}."""
        return dict(self._fetch('SELECT consumer, instance FROM links'))

    def instance_of(self, consumer: str) -> str | None:
        rows = self._fetch('SELECT instance FROM links WHERE consumer = ?',
                           (consumer,))
        return rows[0][0] if rows else None

    # -- writes (inside a transaction) --------------------------------------
    def link(self, consumer: str, instance: str) -> None:
        self._execute('INSERT OR REPLACE INTO links (consumer, instance) '
                      'VALUES (?, ?)', (consumer, instance))

    def unlink(self, consumer: str) -> None:
        self._execute('DELETE FROM links WHERE consumer = ?', (consumer,))

    def add(self, entry: Entry) -> None:
        self._execute('INSERT INTO devices (%s) VALUES (%s)' % (
            ', '.join(ledger_schema.FIELDS),
            ', '.join('?' * len(ledger_schema.FIELDS))),
            dataclasses.astuple(entry))

    def update(self, device_id: str, **changes) -> None:
        changes.setdefault('changed_at', time.time())
        self._execute('UPDATE devices SET %s WHERE device_id = ?' % (
            ', '.join('%s = ?' % k for k in changes)),
            tuple(changes.values()) + (device_id,))

    def delete(self, device_id: str) -> None:
        self._execute('DELETE FROM devices WHERE device_id = ?',
                      (device_id,))
