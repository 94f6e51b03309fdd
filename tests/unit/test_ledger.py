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
"""The ledger: shared between threads, schema versions, its faults named."""

import os
import sqlite3
import threading


from tests import timeout
from tests.unit import base
from tests.unit import lifecycle
from tests.unit import test_allocator
from vgpu_nova_ext.devices import ledger
from vgpu_nova_ext import exception

V0_SCHEMA = """
CREATE TABLE devices (device_id TEXT PRIMARY KEY, kind TEXT NOT NULL,
    gpu TEXT NOT NULL, parent TEXT NOT NULL, type_id TEXT NOT NULL,
    consumer TEXT, state TEXT NOT NULL, origin TEXT NOT NULL,
    changed_at REAL NOT NULL, orphaned_at REAL);
CREATE TABLE links (consumer TEXT PRIMARY KEY, instance TEXT NOT NULL);
INSERT INTO devices VALUES ('d1', 'mdev', 'pci_0000_84_00_0',
    'pci_0000_84_00_0', 'nvidia-18', 'i1', 'active', 'created', 1.0, NULL);
INSERT INTO links VALUES ('m1', 'i1');
"""


class TestThreads(test_allocator.AllocatorTestCase):
    """One allocator and one ledger, used by many threads at once.

    As nova-compute does in native threading mode: its RPC workers claim
    and release while the periodic task reconciles.
    """

    def setUp(self):
        self.profile = lifecycle.profile_file(
            self.useFixture(base.fixtures.TempDir()).path)
        self.config = None
        super().setUp()

    def run_threads(self, work, count=8):
        errors = []

        def guarded(n):
            try:
                work(n)
            except BaseException as exc:  # reported below, by thread
                errors.append((n, exc))

        threads = [threading.Thread(target=guarded, args=(n,))
                   for n in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
            self.assertFalse(thread.is_alive(), 'a thread hung')
        return errors

    def test_claims_from_eight_threads_at_capacity(self):
        gpus = sorted({t.gpu for t in self.al.targets.values()})
        results = {}

        def work(n):
            for i in range(n, 72, 8):
                consumer = 'c%02d' % i
                try:
                    results[consumer] = self.al.claim(
                        consumer, lifecycle.alloc(self.al, gpus[i % 8]))
                except exception.ClaimError as exc:
                    results[consumer] = exc

        self.assertEqual([], self.run_threads(work))
        won = [r for r in results.values() if not isinstance(r, Exception)]
        lost = [r for r in results.values() if isinstance(r, Exception)]
        self.assertEqual((64, 8), (len(won), len(lost)))
        devices = [d.device_id for c in won for d in c.devices]
        self.assertEqual(64, len(set(devices)))
        self.assertAgree()

    def test_releases_while_reconcile_runs(self):
        gpus = sorted({t.gpu for t in self.al.targets.values()})
        consumers = ['c%02d' % i for i in range(32)]
        for i, consumer in enumerate(consumers):
            self.al.claim(consumer, lifecycle.alloc(self.al, gpus[i % 8]))
        stop = threading.Event()
        seen = []

        def reconcile_loop():
            while not stop.is_set():
                seen.append(self.al.reconcile(
                    live_consumers=set(consumers)))

        checker = threading.Thread(target=reconcile_loop)
        checker.start()
        try:
            errors = self.run_threads(
                lambda n: [self.al.release(c) for c in consumers[n::8]])
        finally:
            stop.set()
            checker.join(timeout=120)
        self.assertEqual([], errors)
        self.assertTrue(seen)
        # Nothing the releases freed was taken for an orphan or re-made.
        self.assertEqual([], [a for actions in seen for a in actions
                              if a.kind not in ('foreign',)])
        self.assertEqual({}, self.ledger_states())
        self.assertEqual(set(), set(self.host_devices()) - self.foreign)


class TestSchema(timeout.TestCase):

    def setUp(self):
        super().setUp()
        self.state = os.path.join(
            self.useFixture(base.fixtures.TempDir()).path, 'state')
        os.makedirs(self.state, mode=0o700)
        self.path = os.path.join(self.state, ledger.Ledger.FILE)

    def sqlite(self, script):
        db = sqlite3.connect(self.path)
        db.executescript(script)
        db.close()

    def test_new_ledger_has_the_current_version(self):
        led = ledger.Ledger(self.state)
        self.addCleanup(led.close)
        self.assertEqual(ledger.SCHEMA_VERSION, led.schema_version)

    def test_first_release_ledger_is_migrated_with_its_data(self):
        self.sqlite(V0_SCHEMA)
        led = ledger.Ledger(self.state)
        self.addCleanup(led.close)
        self.assertEqual(ledger.SCHEMA_VERSION, led.schema_version)
        (entry,) = led.all()
        self.assertEqual(('d1', 'i1', 'active'),
                         (entry.device_id, entry.consumer, entry.state))
        # A move's link that holds no device goes with version 5.
        self.assertEqual({}, led.links())

    def test_version_4_consumers_follow_placement(self):
        """Version 5: a device's consumer is its allocation's consumer.

        Version 4 claimed a move's destination devices for the migration
        and kept the source's with the instance; Nova's allocations are
        the other way round. Each case a version 4 host can be in.
        """
        led = ledger.Ledger(self.state)
        led.close()
        rows = [
            # A resize on one host, waiting: the source's (old) and the
            # destination's (new, the migration's).
            ('d1', 'i1'), ('d2', 'm1'),
            # A move's destination, waiting or confirmed (Nova confirms on
            # the source only).
            ('d3', 'm2'),
            # An earlier move confirmed here, then a resize on this host.
            ('d4', 'm3a'), ('d5', 'm3b'),
            # No move.
            ('d6', 'i4'),
        ]
        self.sqlite(''.join(
            "INSERT INTO devices VALUES ('%s', 'mdev', 'g', 'g', 't', '%s', "
            "'active', 'created', 1.0, NULL);" % row for row in rows) +
            "INSERT INTO links VALUES ('m1', 'i1');"
            "INSERT INTO links VALUES ('m2', 'i2');"
            "INSERT INTO links VALUES ('m3a', 'i3');"
            "INSERT INTO links VALUES ('m3b', 'i3');"
            "INSERT INTO links VALUES ('m9', 'i9');"
            'PRAGMA user_version = 4;')
        led = ledger.Ledger(self.state)
        self.addCleanup(led.close)
        self.assertEqual(ledger.SCHEMA_VERSION, led.schema_version)
        self.assertEqual({'d1': 'm1', 'd2': 'i1', 'd3': 'i2', 'd4': 'm3b',
                          'd5': 'i3', 'd6': 'i4'},
                         {e.device_id: e.consumer for e in led.all()})
        # Migrations keep their links while they hold the source's devices.
        self.assertEqual({'m1': 'i1', 'm3b': 'i3'}, led.links())

    def test_foreign_ledger_left_byte_for_byte(self):
        self.sqlite('CREATE TABLE devices (id TEXT, owner TEXT);'
                    "INSERT INTO devices VALUES ('d1', 'someone');")
        with open(self.path, 'rb') as f:
            before = f.read()
        exc = self.assertRaises(exception.LedgerError, ledger.Ledger,
                                self.state)
        self.assertIn('columns id, owner', str(exc))
        self.assertIn('left as it is', str(exc))
        with open(self.path, 'rb') as f:
            self.assertEqual(before, f.read())
        self.assertEqual(['ledger.sqlite'], os.listdir(self.state))

    def test_ledger_of_a_newer_release_is_refused_untouched(self):
        self.sqlite(V0_SCHEMA + 'PRAGMA user_version = 99;')
        with open(self.path, 'rb') as f:
            before = f.read()
        exc = self.assertRaises(exception.LedgerError, ledger.Ledger,
                                self.state)
        with open(self.path, 'rb') as f:
            self.assertEqual(before, f.read())
        self.assertIn('schema version 99', str(exc))
        self.assertIn(self.path, str(exc))
        db = sqlite3.connect(self.path)
        self.addCleanup(db.close)
        self.assertEqual(99, db.execute('PRAGMA user_version').fetchone()[0])
        self.assertEqual(1, db.execute('SELECT COUNT(*) FROM devices')
                         .fetchone()[0])


class TestFaults(timeout.TestCase):
    """Each fault names the file or directory and the fix."""

    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(base.fixtures.TempDir()).path

    def test_damaged_file(self):
        state = os.path.join(self.dir, 'state')
        os.makedirs(state, mode=0o700)
        path = os.path.join(state, ledger.Ledger.FILE)
        with open(path, 'wb') as f:
            f.write(b'not a database, ' * 256)
        exc = self.assertRaises(exception.LedgerError, ledger.Ledger, state)
        self.assertIn(path, str(exc))
        self.assertIn('moved away', str(exc))

    def test_full_file_system(self):
        # SQLite's own "disk is full" (SQLITE_FULL), made real by capping
        # the file at the pages it has: what a full file system gives.
        state = os.path.join(self.dir, 'state')
        led = ledger.Ledger(state)
        self.addCleanup(led.close)
        pages = led._execute('PRAGMA page_count').fetchone()[0]
        led._execute('PRAGMA max_page_count = %d' % pages)
        exc = self.assertRaises(exception.LedgerError, self._fill, led)
        self.assertIn(os.path.join(state, ledger.Ledger.FILE), str(exc))
        self.assertIn('full', str(exc))
        # What was there before is intact and readable.
        self.assertIsInstance(led.all(), list)

    @staticmethod
    def _fill(led) -> None:
        for i in range(10000):
            led.add(ledger.Entry(
                device_id='%08d-0000-4000-8000-000000000000' % i,
                kind='mdev', gpu='pci_0000_84_00_0',
                parent='pci_0000_84_00_0', type_id='nvidia-18',
                consumer=None, state=ledger.FREE, origin=ledger.CREATED,
                changed_at=0.0))

    def test_directory_in_place_of_the_file(self):
        state = os.path.join(self.dir, 'state')
        os.makedirs(os.path.join(state, ledger.Ledger.FILE))
        exc = self.assertRaises(exception.LedgerError, ledger.Ledger, state)
        self.assertIn(os.path.join(state, ledger.Ledger.FILE), str(exc))

    def test_file_in_place_of_the_state_directory(self):
        state = os.path.join(self.dir, 'state')
        open(state, 'w').close()
        exc = self.assertRaises(exception.LedgerError, ledger.Ledger, state)
        self.assertIn(state, str(exc))
        self.assertIn('state_path', str(exc))

    def test_state_directory_of_another_user(self):
        if os.geteuid() != 0:
            self.skipTest('needs root to give a directory away')
        state = os.path.join(self.dir, 'state')
        os.makedirs(state, mode=0o700)
        os.chown(state, 65534, 65534)
        exc = self.assertRaises(exception.LedgerError, ledger.Ledger, state)
        self.assertIn('belongs to uid 65534', str(exc))
        # Root is told to act as the owner, never to take the ledger over.
        self.assertIn("sudo -u '#65534'", str(exc))
        self.assertNotIn('chown', str(exc))
        self.assertEqual([], os.listdir(state))
