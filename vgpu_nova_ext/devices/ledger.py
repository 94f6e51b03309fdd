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

Threads: nova-compute calls the driver from many threads (native threads
in Nova 34's default mode, green threads under eventlet). The ledger keeps
ONE connection, opened with ``check_same_thread=False``, behind a
re-entrant lock held for each statement and for the whole of a
transaction. One connection rather than one per thread: Nova's thread
pools start and end threads, and a connection per thread would be opened
and leaked with each; every ledger statement is a sub-millisecond index
look-up, so serialising them costs nothing next to the host writes, which
the lock never covers.

Schema: ``PRAGMA user_version`` numbers the schema; :data:`_MIGRATIONS`
takes a ledger of any earlier version (0: the first release, which set no
version) to the current one, in one transaction. A ledger written by a
newer release is refused, not guessed at.
"""

import contextlib
import dataclasses
import os
import sqlite3
import stat
import threading
import time
import urllib.parse

from vgpu_nova_ext import exception

CREATING = 'creating'
ACTIVE = 'active'
FREE = 'free'
REMOVING = 'removing'
CREATED = 'created'
ADOPTED = 'adopted'

_SCHEMA_V1 = """
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
# Version 2: the names read for each type on each physical GPU. NVIDIA's
# vendor-specific VFIO lists a type (with its name) only while a VF can
# still take it, so a full GPU no longer names its types; type ids are
# unique per board only, so names are kept per GPU.
_SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS type_names (
    gpu TEXT NOT NULL,
    type_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    PRIMARY KEY (gpu, type_id)
)
"""
# Version 3: a MIG layout being carved on a GPU, written before the first
# step and removed after the last, so that a crash in between is finished
# at the next start.
_SCHEMA_V3 = """
CREATE TABLE IF NOT EXISTS mig_intents (
    gpu TEXT PRIMARY KEY,
    layout TEXT NOT NULL,
    started_at REAL NOT NULL
)
"""
# Version 4: how often things happened on this host, for the metrics
# (monotonic counters, as Prometheus expects them).
_SCHEMA_V4 = """
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
)
"""


def _consumers_as_placement(execute) -> None:
    """Version 5: a device's consumer is its allocation's consumer.

    Up to version 4 a cold migration's or resize's destination claimed its
    devices for the migration (linked to the instance) and the source kept
    the instance's; Nova's allocations go the other way (the migration
    holds the source's, the instance the destination's), and a move
    confirmed across hosts left the instance without devices, since Nova
    confirms on the source only. Per instance with linked migrations that
    hold devices here, the last linked of them is the move whose
    destination this is: its devices become the instance's; the instance's
    own and those of its older moves (an unconfirmed resize on one host
    keeps them for a revert) become that migration's. Links that hold
    nothing then go.
    """
    rows = execute(
        'SELECT l.consumer, l.instance FROM links l WHERE EXISTS (SELECT 1 '
        'FROM devices d WHERE d.consumer = l.consumer) ORDER BY l.rowid'
    ).fetchall()
    moves: dict[str, list[str]] = {}
    for migration, instance in rows:
        moves.setdefault(instance, []).append(migration)
    for instance, migrations in moves.items():
        last = migrations[-1]
        held = {c: [r[0] for r in execute(
            'SELECT device_id FROM devices WHERE consumer = ?',
            (c,)).fetchall()] for c in [instance] + migrations}
        for consumer, devices in held.items():
            owner = instance if consumer == last else last
            for device_id in devices:
                execute('UPDATE devices SET consumer = ? WHERE device_id = ?',
                        (owner, device_id))
    execute('DELETE FROM links WHERE consumer NOT IN (SELECT consumer FROM '
            'devices WHERE consumer IS NOT NULL)')


# Version 6: the MIG layout last carved on each GPU, so that a host that
# comes back without its GPU instances (a reboot) carves again the layout
# its guests' devices need, whatever nova.conf declares now.
_SCHEMA_V6 = """
CREATE TABLE IF NOT EXISTS mig_layouts (
    gpu TEXT PRIMARY KEY,
    layout TEXT NOT NULL,
    carved_at REAL NOT NULL
)
"""
#: The counters :meth:`Ledger.count_event` keeps.
COUNTERS = ('claims_failed', 'orphans_freed', 'devices_recreated')
#: What takes a ledger from version N-1 to N, N = index + 1: statements,
#: or a function given the statement runner. Append only: a released step
#: never changes. Version 1 is the first release's schema (its ledgers
#: have user_version 0 and these tables).
_MIGRATIONS: tuple = (
    tuple(s.strip() for s in _SCHEMA_V1.split(';') if s.strip()),
    (_SCHEMA_V2.strip(),),
    (_SCHEMA_V3.strip(),),
    (_SCHEMA_V4.strip(),),
    _consumers_as_placement,
    (_SCHEMA_V6.strip(),),
)
SCHEMA_VERSION = len(_MIGRATIONS)
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


def check_state_dir(path: str) -> None:
    """Make sure the state directory is this service user's to write.

    :raises LedgerError: naming the directory, what is wrong and the fix.
    """
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.stat(path)
    except OSError as exc:
        raise exception.LedgerError(
            'cannot create the state directory %s: %s; create it owned by '
            'the user nova-compute runs as (uid %d), or set [vgpu_nova_ext] '
            'state_path to a directory it can write' % (
                path, exc.strerror, os.geteuid()))
    if not stat.S_ISDIR(info.st_mode):
        raise exception.LedgerError(
            'the state directory %s is not a directory; set [vgpu_nova_ext] '
            'state_path to a directory' % path)
    euid = os.geteuid()
    if info.st_uid != euid:
        # Root running the command line over nova-compute's directory must
        # not take it over: files it made would lock nova-compute out.
        fix = ('run this as its owner (sudo -u \'#%d\' ...)' % info.st_uid
               if euid == 0 else 'chown -R %d %s' % (euid, path))
        raise exception.LedgerError(
            'the state directory %s belongs to uid %d, not to uid %d that '
            'this process runs as: the ledger must be written by one user '
            'only; %s' % (path, info.st_uid, euid, fix))
    if not os.access(path, os.W_OK | os.X_OK):
        if on_read_only_mount(path):
            raise exception.LedgerError(
                'the state directory %s is on a read-only file system: the '
                'ledger cannot be written there; mount it read-write (or set '
                '[vgpu_nova_ext] state_path to a directory on a writable '
                'volume, as Nova\'s state_path)' % path)
        raise exception.LedgerError(
            'the state directory %s is not writable by uid %d (mode %o); '
            'chmod u+rwx %s' % (path, euid, stat.S_IMODE(info.st_mode),
                                path))
    _check_trusted(path, info)


def on_read_only_mount(path: str) -> bool:
    """Whether ``path`` is on a file system mounted read-only."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _check_trusted(path: str, info: os.stat_result) -> None:
    """No other user may write in the state directory, nothing is a link.

    Checked by readers too: what others could have written is not read.
    """
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        raise exception.LedgerError(
            'the state directory %s has mode %o: other users may write in '
            'it, and so replace the ledger or plant links that this service '
            'would write through; chmod 0700 %s' % (path, mode, path))
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_symlink():
                raise exception.LedgerError(
                    '%s is a symbolic link (to %s): the ledger and its lock '
                    'would be written through it, wherever it points; '
                    'nothing in the state directory may be a link, so '
                    'remove it and let the service create the file' % (
                        entry.path, os.readlink(entry.path)))


class ReadOnlyLedger:
    """A host's ledger read once, for the commands that never write.

    ``devices``, ``metrics`` and ``audit`` read it so. Opened
    ``mode=ro`` (a WAL reader takes no write lock and waits for none),
    read in one transaction, closed: nothing is created, migrated or
    locked, whatever nova-compute is doing. A host that has no ledger yet
    reads as an empty one.

    :raises LedgerError: naming the file and why it cannot be read (a
        newer schema, a damaged file, no permission); nothing was changed.
    """

    def __init__(self, state_path: str | None) -> None:
        """:param state_path: None: an empty ledger (none could be read)."""
        self.path = os.path.join(state_path or '', Ledger.FILE)
        self.entries: list[Entry] = []
        self.link_map: dict[str, str] = {}
        self.counter_values: dict[str, int] = {}
        self.name_rows: list[tuple] = []
        self.intent_map: dict[str, str] = {}
        self.layout_map: dict[str, str] = {}
        if state_path is None:
            return
        try:
            info = os.stat(state_path)
        except FileNotFoundError:
            return      # no ledger yet
        except OSError as exc:
            raise exception.LedgerError(
                'cannot read the state directory %s: %s' % (
                    state_path, exc.strerror))
        if not stat.S_ISDIR(info.st_mode):
            raise exception.LedgerError(
                'the state directory %s is not a directory; set '
                '[vgpu_nova_ext] state_path to a directory' % state_path)
        _check_trusted(state_path, info)
        if not os.path.lexists(self.path):
            return
        if not os.path.isfile(self.path):
            raise exception.LedgerError(
                'the vGPU ledger %s is not a file; move it away (the next '
                'start of nova-compute rebuilds what it can from the host '
                'and the guests)' % self.path)
        try:
            db = sqlite3.connect('file:%s?mode=ro' % urllib.parse.quote(
                self.path), uri=True, timeout=5)
        except sqlite3.Error as exc:
            raise self._error(exc)
        try:
            db.execute('BEGIN')
            version = db.execute('PRAGMA user_version').fetchone()[0]
            if version > SCHEMA_VERSION:
                raise exception.LedgerError(
                    'the vGPU ledger %s has schema version %d, newer than '
                    'the %d this release knows; read it with the release '
                    'that wrote it' % (self.path, version, SCHEMA_VERSION))
            self.entries = [Entry(*row) for row in db.execute(
                'SELECT %s FROM devices ORDER BY device_id' % ', '.join(
                    _FIELDS))]
            self.link_map = dict(db.execute(
                'SELECT consumer, instance FROM links'))
            # Each table from the schema version that brought it.
            if version >= 2:
                self.name_rows = db.execute(
                    'SELECT gpu, type_id, name, description FROM '
                    'type_names').fetchall()
            if version >= 3:
                self.intent_map = dict(db.execute(
                    'SELECT gpu, layout FROM mig_intents'))
            if version >= 4:
                self.counter_values = dict(db.execute(
                    'SELECT name, value FROM counters'))
            if version >= 6:
                self.layout_map = dict(db.execute(
                    'SELECT gpu, layout FROM mig_layouts'))
            for name, value in self.counter_values.items():
                if not isinstance(value, int) or value < 0:
                    raise exception.LedgerError(
                        'the vGPU ledger %s holds %r as counter %s, not a '
                        'whole number >= 0: the file was changed by hand or '
                        'is damaged' % (self.path, value, name))
        except sqlite3.Error as exc:
            raise self._error(exc)
        finally:
            db.close()

    def _error(self, exc) -> exception.LedgerError:
        return exception.LedgerError(
            'cannot read the vGPU ledger %s: %s; nothing was changed (a '
            'damaged ledger can be moved away: the next start of '
            'nova-compute rebuilds what it can from the host and the '
            'guests)' % (self.path, exc))

    def all(self) -> list[Entry]:
        return list(self.entries)

    def links(self) -> dict[str, str]:
        return dict(self.link_map)

    def instance_of(self, consumer: str) -> str | None:
        return self.link_map.get(consumer)

    def counters(self) -> dict[str, int]:
        return {name: self.counter_values.get(name, 0) for name in COUNTERS}

    def type_names(self) -> dict[tuple[str, str], tuple[str, str | None]]:
        return {(gpu, type_id): (name, description)
                for gpu, type_id, name, description in self.name_rows}

    def mig_intents(self) -> dict[str, str]:
        return dict(self.intent_map)

    def mig_layouts(self) -> dict[str, str]:
        return dict(self.layout_map)


class Ledger:
    """The ledger file of one host; safe to share between threads."""

    FILE = 'ledger.sqlite'

    def __init__(self, state_path: str) -> None:
        check_state_dir(state_path)
        self.path = os.path.join(state_path, self.FILE)
        # Created in __init__, not at import: under eventlet this is then
        # the patched (green) lock.
        self._lock = threading.RLock()
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
        for name, wanted in (('devices', list(_FIELDS)),
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
            for step in _MIGRATIONS[version:]:
                if callable(step):
                    step(self._execute)
                    continue
                for statement in step:
                    self._execute(statement)
            if version != SCHEMA_VERSION:
                # PRAGMA takes no parameters; the value is our constant.
                self._execute('PRAGMA user_version = %d' % SCHEMA_VERSION)

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
                ', '.join(_FIELDS), where,
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
            ', '.join(_FIELDS), ', '.join('?' * len(_FIELDS))),
            dataclasses.astuple(entry))

    def update(self, device_id: str, **changes) -> None:
        changes.setdefault('changed_at', time.time())
        self._execute('UPDATE devices SET %s WHERE device_id = ?' % (
            ', '.join('%s = ?' % k for k in changes)),
            tuple(changes.values()) + (device_id,))

    def delete(self, device_id: str) -> None:
        self._execute('DELETE FROM devices WHERE device_id = ?',
                      (device_id,))
