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
"""The ledger's schema: its states, tables, record and migrations.

``PRAGMA user_version`` numbers the schema; :data:`MIGRATIONS` takes a
ledger of any earlier version (0: the first release, which set no version)
to the current one, in one transaction. A ledger written by a newer
release is refused, not guessed at. States:

- ``creating``: about to be created for ``consumer``;
- ``active``: exists and belongs to ``consumer``;
- ``free``: exists, belongs to no one, kept for reuse;
- ``removing``: about to be removed.
"""

import dataclasses

#: The ledger's file in its state directory.
FILE = 'ledger.sqlite'

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
MIGRATIONS: tuple = (
    tuple(s.strip() for s in _SCHEMA_V1.split(';') if s.strip()),
    (_SCHEMA_V2.strip(),),
    (_SCHEMA_V3.strip(),),
    (_SCHEMA_V4.strip(),),
    _consumers_as_placement,
    (_SCHEMA_V6.strip(),),
)
SCHEMA_VERSION = len(MIGRATIONS)
FIELDS = ('device_id', 'kind', 'gpu', 'parent', 'type_id', 'consumer',
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
