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
import json
import os
import uuid


from tests import configs
from tests import timeout
from tests.unit import base
from tests.unit import lifecycle
from vgpu_nova_ext.devices import allocator
from vgpu_nova_ext.devices import ledger
from vgpu_nova_ext import exception
from vgpu_nova_ext.host import simulated
from vgpu_nova_ext.host import sysfs_backend
from vgpu_nova_ext import inventory
from vgpu_nova_ext import mapping

GPU84 = 'pci_0000_84_00_0'
GPU85 = 'pci_0000_85_00_0'


class AllocatorTestCase(base.TestCase):

    profile = 'm60'
    config = ('[devices]\nenabled_mdev_types = nvidia-18\n'
              '[mdev_nvidia-18]\nmax_unit = 2\n')

    def setUp(self):
        super().setUp()
        self.al = self.make()
        # Devices of the profile itself: foreign to the allocator.
        self.foreign = set(self.host_devices())

    def make(self, **kwargs):
        kwargs.setdefault('config', self.config)
        al = lifecycle.build(self.root, self.profile, **kwargs)
        self.addCleanup(al.ledger.close)
        return al

    def host_devices(self, al=None):
        al = al or self.al
        return {d.device_id: d for d in al.backend.scan().mediated_devices}

    def ledger_states(self, al=None):
        al = al or self.al
        return {e.device_id: (e.consumer, e.state) for e in al.ledger.all()}

    def assertAgree(self, al=None):
        """Host and ledger agree: no leak, nothing owned twice."""
        al = al or self.al
        entries = al.ledger.all()
        self.assertEqual(
            [], [e for e in entries if e.state not in (ledger.ACTIVE,
                                                       ledger.FREE)])
        host = self.host_devices(al)
        for entry in entries:
            self.assertIn(entry.device_id, host)
        ids = [e.device_id for e in entries]
        self.assertEqual(len(ids), len(set(ids)))
        for device_id in set(host) - self.foreign:
            self.assertIn(device_id, ids)


class TestClaim(AllocatorTestCase):

    def test_claim_creates_on_the_gpu_of_the_provider(self):
        claim = self.al.claim('i1', lifecycle.alloc(self.al, GPU85))
        (device,) = claim.devices
        self.assertEqual((GPU85, GPU85, 'nvidia-18', 'mdev'),
                         (device.gpu, device.parent, device.type_id,
                          device.kind))
        self.assertEqual(str(uuid.UUID(device.device_id)), device.device_id)
        host = self.host_devices()
        self.assertEqual(GPU85, host[device.device_id].parent)
        self.assertEqual({device.device_id: ('i1', ledger.ACTIVE)},
                         self.ledger_states())
        self.assertEqual(3, self.al.backend.available(GPU85, 'nvidia-18'))

    def test_claim_is_idempotent(self):
        allocations = lifecycle.alloc(self.al, GPU84, GPU85)
        first = self.al.claim('i1', allocations)
        self.assertEqual(first, self.al.claim('i1', allocations))
        self.assertEqual(2, len(self.host_devices()))

    def test_two_vgpus_on_one_gpu_within_max_unit(self):
        claim = self.al.claim('i1', lifecycle.alloc(self.al, GPU84, GPU84))
        self.assertEqual([GPU84, GPU84], [d.gpu for d in claim.devices])

    def test_other_claim_for_the_same_consumer_is_refused(self):
        self.al.claim('i1', lifecycle.alloc(self.al, GPU84))
        exc = self.assertRaises(exception.ClaimError, self.al.claim, 'i1',
                                lifecycle.alloc(self.al, GPU85))
        self.assertIn('already holds', str(exc))

    def test_non_gpu_resources_are_ignored(self):
        allocations = lifecycle.alloc(self.al, GPU84)
        allocations['root-uuid'] = {'resources': {'VCPU': 2,
                                                  'MEMORY_MB': 512}}
        self.assertEqual(1, len(self.al.claim('i1', allocations).devices))
        self.assertEqual((), self.al.claim('i2', {'root-uuid': {
            'resources': {'VCPU': 1}}}).devices)


class TestClaimRefused(AllocatorTestCase):

    def assertNothingChanged(self, before_host, before_ledger):
        self.assertEqual(before_host, set(self.host_devices()))
        self.assertEqual(before_ledger, self.ledger_states())

    def test_no_capacity_left(self):
        for i in range(2):
            self.al.claim('i%d' % i, lifecycle.alloc(self.al, GPU84, GPU84))
        host, led = set(self.host_devices()), self.ledger_states()
        exc = self.assertRaises(exception.ClaimError, self.al.claim, 'i9',
                                lifecycle.alloc(self.al, GPU84))
        self.assertIn('no room for 1 nvidia-18', str(exc))
        self.assertIn('nothing was changed', str(exc))
        self.assertNothingChanged(host, led)

    def test_second_provider_full_changes_nothing_on_the_first(self):
        for i in range(2):
            self.al.claim('i%d' % i, lifecycle.alloc(self.al, GPU85, GPU85))
        host, led = set(self.host_devices()), self.ledger_states()
        self.assertRaises(exception.ClaimError, self.al.claim, 'i9',
                          lifecycle.alloc(self.al, GPU84, GPU85))
        self.assertNothingChanged(host, led)

    def test_more_than_max_unit(self):
        exc = self.assertRaises(exception.ClaimError, self.al.claim, 'i1',
                                lifecycle.alloc(self.al, GPU84, GPU84,
                                                GPU84))
        self.assertIn('allows 2 per instance', str(exc))
        self.assertEqual({}, self.ledger_states())

    def test_provider_of_another_host(self):
        exc = self.assertRaises(exception.ClaimError, self.al.claim, 'i1', {
            str(uuid.uuid4()): {'resources': {'VGPU': 1}}})
        self.assertIn('not among this host', str(exc))

    def test_wrong_resource_class(self):
        al = self.make(config='[devices]\nenabled_mdev_types = nvidia-18\n'
                       '[mdev_nvidia-18]\nmdev_class = CUSTOM_M60_2Q\n')
        rp = next(iter(al.targets))
        exc = self.assertRaises(exception.ClaimError, al.claim, 'i1', {
            rp: {'resources': {'VGPU': 1}}})
        self.assertIn('provides CUSTOM_M60_2Q', str(exc))
        self.assertEqual(1, len(al.claim('i1', {rp: {'resources': {
            'CUSTOM_M60_2Q': 1}}}).devices))

    def test_create_failure_is_undone(self):
        class FailSecond(simulated.SimulatedBackend):
            # The kernel refusing the second device of a claim (a
            # failure no simulated state reaches on its own).
            creates = 0

            def create_device(self, parent, type_id, device_id):
                FailSecond.creates += 1
                if FailSecond.creates == 2:
                    raise exception.DeviceGoneError('parent fell off')
                super().create_device(parent, type_id, device_id)

        al = self.make(backend_class=FailSecond)
        exc = self.assertRaises(exception.ClaimError, al.claim, 'i1',
                                lifecycle.alloc(al, GPU84, GPU85))
        self.assertIn('undone', str(exc))
        self.assertEqual({}, self.host_devices(al))
        self.assertEqual({}, self.ledger_states(al))


class TestRelease(AllocatorTestCase):

    def test_remove_policy(self):
        claim = self.al.claim('i1', lifecycle.alloc(self.al, GPU84))
        self.assertEqual((claim.devices[0].device_id,),
                         self.al.release('i1'))
        self.assertEqual({}, self.host_devices())
        self.assertEqual({}, self.ledger_states())
        self.assertEqual((), self.al.release('i1'))

    def test_keep_policy_reuses_before_creating(self):
        al = self.make(free_policy=allocator.KEEP)
        first = al.claim('i1', lifecycle.alloc(al, GPU84)).devices[0]
        al.release('i1')
        self.assertEqual({first.device_id: (None, ledger.FREE)},
                         self.ledger_states(al))
        self.assertIn(first.device_id, self.host_devices(al))
        again = al.claim('i2', lifecycle.alloc(al, GPU84)).devices[0]
        self.assertEqual(first.device_id, again.device_id)
        self.assertEqual(1, len(self.host_devices(al)))

    def test_busy_device_stays_until_free(self):
        claim = self.al.claim('i1', lifecycle.alloc(self.al, GPU84))
        device_id = claim.devices[0].device_id
        mark = os.path.join(self.al.backend.root, 'sys/bus/mdev/devices',
                            device_id, simulated.IN_USE_MARK)
        open(mark, 'w').close()
        exc = self.assertRaises(exception.DeviceBusyError, self.al.release,
                                'i1')
        self.assertIn('busy', str(exc))
        self.assertEqual({device_id: ('i1', ledger.REMOVING)},
                         self.ledger_states())
        os.unlink(mark)
        actions = self.al.reconcile()
        self.assertEqual(['finish-remove'], [a.kind for a in actions])
        self.assertEqual({}, self.host_devices())
        self.assertAgree()


class TestScanReuse(AllocatorTestCase):
    """A recent scan stands for the host until a device changes."""

    def test_recent_scan_reused(self):
        first = self.al.scan()
        self.assertIs(first, self.al.scan(max_age=60))
        self.assertIsNot(first, self.al.scan())      # max_age 0: a new one

    def test_too_old_scan_not_reused(self):
        first = self.al.scan()
        self.assertIsNot(first, self.al.scan(max_age=1e-9))

    def test_claim_and_release_make_it_stale(self):
        self.al.scan()
        claim = self.al.claim('i1', lifecycle.alloc(self.al, GPU84))
        (device,) = claim.devices
        seen = {d.device_id for d in self.al.scan(
            max_age=60).mediated_devices}
        self.assertIn(device.device_id, seen)
        self.al.release('i1')
        seen = {d.device_id for d in self.al.scan(
            max_age=60).mediated_devices}
        self.assertNotIn(device.device_id, seen)

    def test_a_failed_create_makes_it_stale_too(self):
        # Whether the kernel made the device or not is unknown then.
        self.al.scan()
        full = {t.gpu: t for t in self.al.targets.values()}[GPU84]
        for n in range(64):
            try:
                self.al.claim('f%d' % n, lifecycle.alloc(self.al, GPU84))
            except exception.ClaimError:
                break
        before = self.al.scan(max_age=60)
        self.assertRaises(exception.DeviceError, self.al._create_on_host,
                          full.parents[0], 'nvidia-18', str(uuid.uuid4()))
        self.assertIsNot(before, self.al.scan(max_age=60))


class TestTypeNamesSurvive(AllocatorTestCase):
    """A full vendor-VFIO GPU no longer names its type; the name stays."""

    profile = 'a40-vfio'
    config = '[devices]\nenabled_mdev_types = nvidia-558\n'
    GPU = 'pci_0000_3d_00_0'

    def fill(self, al) -> None:
        """Type every free VF of the first GPU (other owners' devices)."""
        snapshot = al.backend.scan()
        gpu = next(g for g in snapshot.gpus if g.name == self.GPU)
        held = {d.parent for d in snapshot.mediated_devices}
        for parent in gpu.parents:
            if parent.name not in held:
                try:
                    al.backend.create_device(parent.name, 'nvidia-558',
                                             parent.address)
                except Exception:
                    break  # the GPU is full: the per-GPU maximum

    def name_of(self, snapshot) -> str | None:
        gpu = next(g for g in snapshot.gpus if g.name == self.GPU)
        return gpu.type_name('nvidia-558')

    def test_full_gpu_keeps_its_name_across_a_restart(self):
        self.assertEqual('NVIDIA A40-2Q', self.name_of(self.al.scan()))
        self.fill(self.al)
        # The host itself no longer names the type on that GPU ...
        self.assertIsNone(self.name_of(self.al.backend.scan()))
        # ... the allocator does, now and after a restart.
        self.assertEqual('NVIDIA A40-2Q', self.name_of(self.al.scan()))
        again = self.make()
        self.assertEqual('NVIDIA A40-2Q', self.name_of(again.scan()))
        self.assertEqual({(self.GPU, 'nvidia-558'): ('NVIDIA A40-2Q', None)},
                         {k: v for k, v in again.ledger.type_names().items()
                          if k[0] == self.GPU and k[1] == 'nvidia-558'})

    def test_never_read_is_a_warning_and_keeps_the_id_trait(self):
        self.fill(self.al)
        # As on a first start with the GPU already full: nothing recorded.
        with self.al.ledger.transaction():
            self.al.ledger._execute('DELETE FROM type_names')
        snapshot = self.make().scan()
        self.assertIsNone(self.name_of(snapshot))
        plan = mapping.assign(configs.device_config(
            [self.write_config(self.config)]), snapshot)
        codes = [(p.code, p.value) for p in plan.problems]
        self.assertIn(('type.name_unknown', 'nvidia-558'), codes)
        tree = inventory.provider_tree('h', plan)
        spec = tree.by_name()['h_' + self.GPU]
        self.assertIn('CUSTOM_VGPU_NVIDIA_558', spec.traits)
        # A name trait the provider has stays while the name is unknown.
        self.assertIn('CUSTOM_VGPU_A40_2Q', inventory.merged_traits(
            ['CUSTOM_VGPU_A40_2Q', 'CUSTOM_VGPU_NVIDIA_558'], spec))


class TestReconcile(AllocatorTestCase):

    def test_host_reboot_recreates_with_the_same_ids(self):
        claims = [self.al.claim('i%d' % i, lifecycle.alloc(self.al, gpu))
                  for i, gpu in enumerate((GPU84, GPU85, GPU85))]
        before = {d.device_id: (d.parent, d.type_id)
                  for c in claims for d in c.devices}
        for device_id in before:       # the host reboots: devices gone
            self.al.backend.remove_device(device_id)
        self.assertEqual({}, self.host_devices())
        actions = self.al.reconcile()
        self.assertEqual(['recreate'] * 3, [a.kind for a in actions])
        after = {k: (d.parent, d.type_id)
                 for k, d in self.host_devices().items()}
        self.assertEqual(before, after)
        self.assertAgree()
        self.assertEqual((), self.al.reconcile())

    def test_foreign_device_left_alone(self):
        foreign = str(uuid.uuid4())
        self.al.backend.create_device(GPU84, 'nvidia-18', foreign)
        actions = self.al.reconcile(live_consumers=set())
        self.assertEqual([('foreign', foreign)],
                         [(a.kind, a.device_id) for a in actions])
        self.assertIn(foreign, self.host_devices())
        self.assertEqual({}, self.ledger_states())
        # Never reused either.
        self.al.claim('i1', lifecycle.alloc(self.al, GPU84))
        self.assertNotIn(foreign, [e.device_id for e in self.al.ledger.all()])

    def test_unused_device_of_the_type_adopted_free_when_asked(self):
        # What Nova's in-tree support leaves behind: an mdev of the GPU's
        # configured type that no domain uses. With every domain known
        # (inside nova-compute), it becomes a free device and is reused.
        left = str(uuid.uuid4())
        used = str(uuid.uuid4())
        self.al.backend.create_device(GPU84, 'nvidia-18', left)
        self.al.backend.create_device(GPU85, 'nvidia-18', used)
        self.assertEqual(
            [('foreign', left), ('adopt', used)],
            sorted([(a.kind, a.device_id) for a in self.al.reconcile(
                guest_devices={'i7': [used]}, dry_run=True)],
                key=lambda a: a[1] != left))
        actions = self.al.reconcile(guest_devices={'i7': [used]},
                                    adopt_unused=True)
        self.assertEqual({('adopt-free', left), ('adopt', used)},
                         {(a.kind, a.device_id) for a in actions})
        self.assertEqual({left: (None, ledger.FREE),
                          used: ('i7', ledger.ACTIVE)}, self.ledger_states())
        claim = self.al.claim('i8', lifecycle.alloc(self.al, GPU84))
        self.assertEqual([left], [d.device_id for d in claim.devices])
        self.assertAgree()

    def test_devices_on_a_gpu_not_served_are_left_to_their_owner(self):
        al = self.make()
        # As if [mdev_nvidia-18] device_addresses named only the other GPU;
        # on this one, Cyborg's mdevs (made by Nova 34 for accelerator
        # requests): one a guest uses, one not yet.
        al.targets = {u: t for u, t in al.targets.items() if t.gpu != GPU84}
        self.assertTrue(al.targets)
        used, unused = str(uuid.uuid4()), str(uuid.uuid4())
        al.backend.create_device(GPU84, 'nvidia-18', used)
        al.backend.create_device(GPU84, 'nvidia-18', unused)
        self.assertEqual((), al.reconcile(
            live_consumers={'i7'}, guest_devices={'i7': [used]},
            adopt_unused=True))
        self.assertEqual({}, self.ledger_states(al))
        self.assertIn(used, self.host_devices(al))
        self.assertIn(unused, self.host_devices(al))

    def test_device_in_a_domain_is_adopted(self):
        novas = str(uuid.uuid4())
        self.al.backend.create_device(GPU84, 'nvidia-18', novas)
        actions = self.al.reconcile(guest_devices={'i7': [novas]})
        self.assertEqual([('adopt', novas)],
                         [(a.kind, a.device_id) for a in actions])
        self.assertEqual({novas: ('i7', ledger.ACTIVE)},
                         self.ledger_states())
        self.assertEqual(novas, self.al.claim('i7', lifecycle.alloc(
            self.al, GPU84)).devices[0].device_id)

    def test_orphans_freed_after_grace(self):
        al = self.make(orphan_grace=300)
        al.claim('gone', lifecycle.alloc(al, GPU84))
        al.claim('here', lifecycle.alloc(al, GPU85))
        actions = al.reconcile(live_consumers={'here'}, now=1000.0)
        self.assertEqual(['mark-orphan'], [a.kind for a in actions])
        self.assertEqual((), al.reconcile(live_consumers={'here'},
                                          now=1100.0))
        actions = al.reconcile(live_consumers={'here'}, now=1300.0)
        self.assertEqual(['free-orphan'], [a.kind for a in actions])
        self.assertEqual({'here'}, {c for c, _ in
                                    self.ledger_states(al).values()})
        self.assertEqual(1, len(self.host_devices(al)))

    def test_consumer_back_before_grace_keeps_its_device(self):
        self.al.claim('i1', lifecycle.alloc(self.al, GPU84))
        self.al.reconcile(live_consumers=set(), now=1000.0)
        actions = self.al.reconcile(live_consumers={'i1'}, now=1001.0)
        self.assertEqual(['clear-orphan'], [a.kind for a in actions])
        self.assertEqual((), self.al.reconcile(live_consumers={'i1'},
                                               now=5000.0))
        self.assertEqual({'i1'}, {c for c, _ in
                                  self.ledger_states().values()})

    def test_dry_run_changes_nothing(self):
        claim = self.al.claim('i1', lifecycle.alloc(self.al, GPU84))
        self.al.backend.remove_device(claim.devices[0].device_id)
        actions = self.al.reconcile(dry_run=True)
        self.assertEqual(['recreate'], [a.kind for a in actions])
        self.assertEqual({}, self.host_devices())
        self.assertEqual(actions, self.al.reconcile())
        self.assertEqual(1, len(self.host_devices()))

    def test_device_owned_by_another_guest_is_a_conflict(self):
        claim = self.al.claim('i1', lifecycle.alloc(self.al, GPU84))
        device_id = claim.devices[0].device_id
        actions = self.al.reconcile(guest_devices={'i2': [device_id]})
        self.assertEqual([('conflict', device_id)],
                         [(a.kind, a.device_id) for a in actions])
        self.assertEqual({device_id: ('i1', ledger.ACTIVE)},
                         self.ledger_states())

    def test_mdevctl_definitions(self):
        path = os.path.join(self.root, 'mdevctl.d')
        al = self.make(mdevctl_path=path)
        device_id = al.claim('i1', lifecycle.alloc(al, GPU84)).devices[0] \
            .device_id
        definition = os.path.join(path, '0000:84:00.0', device_id)
        with open(definition) as f:
            self.assertEqual({'mdev_type': 'nvidia-18', 'start': 'auto',
                              'attrs': []}, json.load(f))
        al.release('i1')
        self.assertFalse(os.path.exists(definition))


class TestSRIOV(AllocatorTestCase):

    profile = 'a100-sriov'
    config = '[devices]\nenabled_mdev_types = nvidia-471\n'

    def test_vfs_fill_up_to_the_gpu_limit(self):
        gpu = 'pci_0000_61_00_0'
        devices = []
        for i in range(4):
            devices += self.al.claim('i%d' % i, lifecycle.alloc(
                self.al, gpu)).devices
        self.assertEqual(4, len({d.parent for d in devices}))
        self.assertEqual({gpu}, {d.gpu for d in devices})
        exc = self.assertRaises(exception.ClaimError, self.al.claim, 'i9',
                                lifecycle.alloc(self.al, gpu))
        self.assertIn('no room', str(exc))
        self.assertAgree()


class TestSysfsErrors(base.TestCase):
    """The sysfs backend's errors on a plain kernel-layout tree."""

    def test_nothing_appears_times_out(self):
        self.add_gpu('0000:84:00.0', [base.nvidia_type('nvidia-18', 'x', 4)])
        backend = sysfs_backend.SysfsBackend(self.root, timeout=0.2)
        exc = self.assertRaises(exception.DeviceTimeoutError,
                                backend.create_device, GPU84, 'nvidia-18',
                                str(uuid.uuid4()))
        self.assertIn('did not appear', str(exc))

    def test_unknown_parent_and_type(self):
        self.add_gpu('0000:84:00.0', [base.nvidia_type('nvidia-18', 'x', 4)])
        backend = sysfs_backend.SysfsBackend(self.root, timeout=0.2)
        self.assertRaises(exception.DeviceGoneError, backend.create_device,
                          GPU85, 'nvidia-18', str(uuid.uuid4()))
        self.assertRaises(exception.DeviceGoneError, backend.create_device,
                          GPU84, 'nvidia-99', str(uuid.uuid4()))

    def test_removing_a_gone_device_is_fine(self):
        backend = sysfs_backend.SysfsBackend(self.root)
        backend.remove_device(str(uuid.uuid4()))

    def test_kernel_errors_are_named(self):
        backend = simulated.SimulatedBackend('p40')
        self.addCleanup(backend.close)
        existing = backend.scan().mediated_devices[0].device_id
        exc = self.assertRaises(exception.DeviceExistsError,
                                backend.create_device, 'pci_0000_82_00_0',
                                'nvidia-50', existing)
        self.assertIn('exists already', str(exc))
        self.assertRaises(exception.DeviceError, backend.create_device,
                          'pci_0000_82_00_0', 'nvidia-50', 'not-a-uuid')


class TestLedgerFile(timeout.TestCase):

    def test_private_file(self):
        path = self.useFixture(base.fixtures.TempDir()).path
        state = os.path.join(path, 'state')
        led = ledger.Ledger(state)
        self.addCleanup(led.close)
        self.assertEqual(0o700, os.stat(state).st_mode & 0o777)
        self.assertEqual(0, os.stat(led.path).st_mode & 0o077)

    def test_state_root_made_private_too(self):
        # <state_path>/<host>: state_path, made on the way, is 0700 as
        # well, whatever the umask; an existing parent keeps its mode.
        path = self.useFixture(base.fixtures.TempDir()).path
        os.chmod(path, 0o755)
        host_dir = os.path.join(path, 'vgpu-nova-ext', 'cn1')
        old_umask = os.umask(0o022)
        try:
            led = ledger.Ledger(host_dir)
        finally:
            os.umask(old_umask)
        self.addCleanup(led.close)
        for directory in (host_dir, os.path.dirname(host_dir)):
            self.assertEqual(0o700, os.stat(directory).st_mode & 0o777,
                             directory)
        self.assertEqual(0o755, os.stat(path).st_mode & 0o777)

    def test_unwritable_state_path(self):
        exc = self.assertRaises(exception.LedgerError, ledger.Ledger,
                                '/proc/vgpu-nova-ext')
        self.assertIn('state_path', str(exc))


class TestRemoveForeign(AllocatorTestCase):

    def test_only_what_the_operator_names_and_never_an_owned_one(self):
        foreign = [str(uuid.uuid4()) for _ in range(2)]
        for device_id in foreign:
            self.al.backend.create_device(GPU84, 'nvidia-18', device_id)
        owned = self.al.claim('i1', lifecycle.alloc(self.al, GPU85)) \
            .devices[0].device_id
        exc = self.assertRaises(exception.ClaimError,
                                self.al.remove_foreign, [foreign[0], owned])
        self.assertIn('i1', str(exc))
        self.assertEqual(3, len(self.host_devices()))
        self.assertEqual((foreign[0],), self.al.remove_foreign(foreign[:1]))
        self.assertEqual({foreign[1], owned}, set(self.host_devices()))

    def test_what_is_not_on_the_host_is_refused_before_anything(self):
        foreign = str(uuid.uuid4())
        self.al.backend.create_device(GPU84, 'nvidia-18', foreign)
        for bad in ('../../pci/devices/0000:84:00.0', str(uuid.uuid4()),
                    foreign.upper(), ''):
            exc = self.assertRaises(exception.ClaimError,
                                    self.al.remove_foreign, [foreign, bad])
            self.assertIn(repr(bad), str(exc))
            self.assertIn('nothing was removed', str(exc))
            self.assertIn(foreign, self.host_devices())


class TestMigrationConsumers(AllocatorTestCase):
    """Devices follow their allocations' consumers, as Nova moves them."""

    def test_linked_devices_live_and_die_with_their_instance(self):
        self.al.claim('inst', lifecycle.alloc(self.al, GPU84))
        self.assertEqual(1, len(self.al.hand_over('inst', 'migration')))
        self.al.claim('inst', lifecycle.alloc(self.al, GPU85))
        self.assertEqual(['migration'], self.al.ledger.linked('inst'))
        # The migration is no instance, but lives with its instance.
        self.assertEqual((), self.al.reconcile(live_consumers={'inst'}))
        freed = self.al.release_instance('inst')
        self.assertEqual(2, len(freed))
        self.assertEqual({}, self.host_devices())
        self.assertEqual([], self.al.ledger.linked('inst'))

    def test_resize_on_one_host_confirmed(self):
        old = self.al.claim('inst', lifecycle.alloc(self.al, GPU84))
        self.al.hand_over('inst', 'mig')
        new = self.al.claim('inst', lifecycle.alloc(self.al, GPU84))
        self.assertNotEqual(old.devices, new.devices)
        self.al.release('mig')
        self.assertEqual({new.devices[0].device_id: ('inst', ledger.ACTIVE)},
                         self.ledger_states())
        self.assertNotIn(old.devices[0].device_id, self.host_devices())
        self.assertEqual([], self.al.ledger.linked('inst'))

    def test_resize_on_one_host_reverted(self):
        old = self.al.claim('inst', lifecycle.alloc(self.al, GPU84))
        self.al.hand_over('inst', 'mig')
        new = self.al.claim('inst', lifecycle.alloc(self.al, GPU84))
        self.al.release('inst')        # the destination's, at revert
        self.assertEqual((old.devices[0].device_id,),
                         self.al.take_back('mig', 'inst'))
        self.assertEqual({old.devices[0].device_id: ('inst', ledger.ACTIVE)},
                         self.ledger_states())
        self.assertNotIn(new.devices[0].device_id, self.host_devices())
        self.assertEqual([], self.al.ledger.linked('inst'))

    def test_nothing_to_hand_over_links_nothing(self):
        self.assertEqual((), self.al.hand_over('inst', 'mig'))
        self.assertEqual({}, self.al.ledger.links())

    def test_release_keeps_what_the_consumer_held_before(self):
        held = self.al.claim('inst', lifecycle.alloc(self.al, GPU84))
        more = self.al.claim('inst', lifecycle.alloc(self.al, GPU84, GPU85))
        kept = {d.device_id for d in held.devices}
        freed = self.al.release('inst', keep=kept)
        self.assertEqual({d.device_id for d in more.devices} - kept,
                         set(freed))
        self.assertEqual({d: ('inst', ledger.ACTIVE) for d in kept},
                         self.ledger_states())

    def test_evacuation_allocations_on_the_host_left_are_ignored(self):
        allocations = lifecycle.alloc(self.al, GPU84)
        allocations[str(uuid.uuid4())] = {'resources': {'VGPU': 1}}
        claim = self.al.claim('inst', allocations)
        self.assertEqual([GPU84], [d.gpu for d in claim.devices])


class TestCombinationRules(AllocatorTestCase):
    """NVIDIA's rules for several vGPUs in one guest, before any change."""

    profile = 'p40'
    config = ('[devices]\nenabled_mdev_types = nvidia-50\n'
              '[mdev_nvidia-50]\nmax_unit = 2\n')

    def test_two_fractional_pascal_vgpus_refused(self):
        gpu = next(iter(self.al.targets.values())).gpu
        before = set(self.host_devices())
        exc = self.assertRaises(exception.CombinationRefused,
                                self.al.check_combination, 'i1',
                                lifecycle.alloc(self.al, gpu, gpu))
        self.assertIn('only full-framebuffer types combine', str(exc))
        self.assertIn('P40-6Q', str(exc))
        self.assertIn('nothing was created', str(exc))
        self.assertEqual(before, set(self.host_devices()))
        self.assertEqual([], self.al.ledger.all())
        # One vGPU is always fine.
        self.al.check_combination('i1', lifecycle.alloc(self.al, gpu))
