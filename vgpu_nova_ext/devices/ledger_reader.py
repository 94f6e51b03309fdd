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
"""Reading a ledger without writing: its directory checked, read-only.

The state directory must be the service user's own (no link, no one
else's write access); :class:`ReadOnlyLedger` reads every table once in
one read transaction (``mode=ro``): nothing is created, migrated or
locked, and no reader waits for nova-compute's write lock.
"""

import os
import sqlite3
import stat
import urllib.parse

from vgpu_nova_ext.devices import ledger_schema
from vgpu_nova_ext import exception


def _make_private_dirs(path: str) -> None:
    """Create ``path`` and each missing parent with mode 0700.

    os.makedirs gives the parents it creates the umask's mode (0755
    usually): ``<state_path>`` itself, made on the way to
    ``<state_path>/<host>``, would show every user the hosts' names.
    """
    missing = []
    head = path
    while head and not os.path.isdir(head):
        missing.append(head)
        parent = os.path.dirname(head)
        if parent == head:
            break
        head = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            # Made meanwhile by another process; checked below as it is.
            pass


def check_state_dir(path: str) -> None:
    """Make sure the state directory is this service user's to write.

    :raises LedgerError: naming the directory, what is wrong and the fix.
    """
    try:
        _make_private_dirs(path)
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
        self.path = os.path.join(state_path or '', ledger_schema.FILE)
        self.entries: list[ledger_schema.Entry] = []
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
            if version > ledger_schema.SCHEMA_VERSION:
                raise exception.LedgerError(
                    'the vGPU ledger %s has schema version %d, newer than '
                    'the %d this release knows; read it with the release '
                    'that wrote it' % (self.path, version,
                                       ledger_schema.SCHEMA_VERSION))
            self.entries = [ledger_schema.Entry(*row) for row in db.execute(
                'SELECT %s FROM devices ORDER BY device_id' % ', '.join(
                    ledger_schema.FIELDS))]
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

    def all(self) -> list[ledger_schema.Entry]:
        return list(self.entries)

    def links(self) -> dict[str, str]:
        return dict(self.link_map)

    def instance_of(self, consumer: str) -> str | None:
        return self.link_map.get(consumer)

    def counters(self) -> dict[str, int]:
        return {name: self.counter_values.get(name, 0)
                for name in ledger_schema.COUNTERS}

    def type_names(self) -> dict[tuple[str, str], tuple[str, str | None]]:
        return {(gpu, type_id): (name, description)
                for gpu, type_id, name, description in self.name_rows}

    def mig_intents(self) -> dict[str, str]:
        return dict(self.intent_map)

    def mig_layouts(self) -> dict[str, str]:
        return dict(self.layout_map)
