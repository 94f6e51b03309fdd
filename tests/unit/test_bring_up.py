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
"""After a host reboot: the VFs back, then every guest's very device."""

import os

import fixtures
import testtools

from tests import configs
from tests.unit import lifecycle
from tests.unit import test_allocator_processes
from vgpu_nova_ext.conf import devices as devices_conf
from vgpu_nova_ext.devices import bring_up
from vgpu_nova_ext.devices import ledger as ledger_mod
from vgpu_nova_ext import findings
from vgpu_nova_ext.host import model
from vgpu_nova_ext.host.simulated import kernel


class Sleeps:
    def __init__(self) -> None:
        self.slept: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)


class TestAfterAReboot(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path

    def build(self, profile: str):
        al = lifecycle.build(self.dir, profile)
        self.addCleanup(al.ledger.close)
        return al

    def devices(self, al) -> dict[str, tuple[str, str]]:
        return {d.device_id: (d.parent, d.type_id)
                for d in al.scan().mediated_devices}

    def reboot_and_restart(self, al, profile: str, **retry):
        """The host reboots; nova-compute starts: bring-up, plan, reconcile.

        As the driver's start does (Extension, then init_host).
        """
        al.backend.reboot()
        al.ledger.close()
        al = self.build(profile)
        config = configs.device_config([os.path.join(self.dir, 'nova.conf')])
        steps, left = al.bring_up(config, **retry)
        al.targets = lifecycle.targets_of(al, config)
        actions = al.reconcile(live_consumers=None)
        return al, steps, left, actions

    def _every_guest_gets_its_device(self, profile: str, gpus: list[str]):
        al = self.build(profile)
        claims = [al.claim('inst-%d' % i, lifecycle.alloc(al, gpu))
                  for i, gpu in enumerate(gpus)]
        held = {d.device_id: c.consumer for c in claims for d in c.devices}
        # The guests' devices (a profile's own mdev is no guest's: a
        # reboot takes it for good, unless mdevctl defines it).
        before = {k: v for k, v in self.devices(al).items() if k in held}
        al, steps, left, actions = self.reboot_and_restart(al, profile)
        self.assertEqual([], left)
        self.assertTrue(steps)
        self.assertEqual(before, self.devices(al))
        self.assertEqual(held, {e.device_id: e.consumer
                                for e in al.ledger.all() if e.consumer})
        self.assertEqual(len(before), len(
            [a for a in actions if a.kind == 'recreate']))
        # Nothing more to do: a second start changes nothing.
        steps, left = al.bring_up(configs.device_config(
            [os.path.join(self.dir, 'nova.conf')]))
        self.assertEqual(([], []), (steps, left))
        self.assertEqual((), tuple(
            a for a in al.reconcile() if a.kind != 'foreign'))

    def test_mdev_on_sriov_gpus(self):
        # A100 with vGPU 16: mdevs on VFs.
        self._every_guest_gets_its_device(
            'a100-sriov', ['pci_0000_41_00_0', 'pci_0000_41_00_0',
                           'pci_0000_c1_00_0'])

    def test_vendor_vfio(self):
        self._every_guest_gets_its_device(
            'l40s-vfio', ['pci_0000_26_00_0', 'pci_0000_26_00_0',
                          'pci_0000_c1_00_0'])

    def test_the_race_after_boot_is_retried(self):
        al = self.build('l40s-vfio')
        al.claim('inst', lifecycle.alloc(al, 'pci_0000_26_00_0'))
        before = self.devices(al)
        self._fault('0000:26:00.0', '2')
        sleeps = Sleeps()
        al, steps, left, _ = self.reboot_and_restart(
            al, 'l40s-vfio', sleep=sleeps)
        self.assertEqual([], left)
        self.assertEqual(list(bring_up.BACKOFF[:2]), sleeps.slept)
        self.assertEqual(before, self.devices(al))

    def test_a_gpu_that_does_not_come_back_leaves_the_others(self):
        al = self.build('l40s-vfio')
        al.claim('inst-a', lifecycle.alloc(al, 'pci_0000_26_00_0'))
        al.claim('inst-b', lifecycle.alloc(al, 'pci_0000_c1_00_0'))
        self._fault('0000:26:00.0', 'always')
        sleeps = Sleeps()
        al, steps, left, actions = self.reboot_and_restart(
            al, 'l40s-vfio', sleep=sleeps)
        (finding,) = left
        self.assertEqual((findings.GPU_BRING_UP_FAILED, findings.ERROR,
                          'host GPU 0000:26:00.0'),
                         (finding.code, finding.severity, finding.where))
        for fragment in ('0000:26:00.0', '%d tries' % (
                len(bring_up.BACKOFF) + 1), 'sriov-manage -e 0000:26:00.0'):
            self.assertIn(fragment, finding.why)
        # Bounded: the back-off, once.
        self.assertEqual(list(bring_up.BACKOFF), sleeps.slept)
        # The other GPU's guest has its device again; the failed GPU's
        # entry is kept for the next start (its parent is not there).
        on_host = self.devices(al)
        entries = {e.consumer: e for e in al.ledger.all()}
        self.assertIn(entries['inst-b'].device_id, on_host)
        self.assertNotIn(entries['inst-a'].device_id, on_host)
        self.assertEqual('active', entries['inst-a'].state)

    def test_dry_run_changes_nothing(self):
        al = self.build('a100-sriov')
        al.claim('inst', lifecycle.alloc(al, 'pci_0000_41_00_0'))
        al.backend.reboot()
        config = configs.device_config([os.path.join(self.dir,
                                                     'nova.conf')])
        steps, left = al.bring_up(config, dry_run=True)
        self.assertEqual(4, len(steps))     # every GPU: a default type
        self.assertEqual([], left)
        self.assertEqual((), al.scan().mediated_devices)
        self.assertFalse(any(g.parents for g in al.scan().gpus))

    def _fault(self, gpu: str, value: str) -> None:
        path = os.path.join(self.dir, 'host', kernel.FAULTS, 'sriov_manage')
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, gpu), 'w') as f:
            f.write(value)


def _gpu(slot: int, vendor: str = '0x10de', total: int = 16,
         enabled: int = 0, driver: str | None = 'nvidia'):
    address = '0000:%02x:00.0' % slot
    return model.PhysicalGPU(
        name='pci_0000_%02x_00_0' % slot, address=address,
        vendor_id=vendor, device_id='0x2236', parents=(),
        sriov_total_vfs=total, sriov_num_vfs=enabled, driver=driver)


class TestWhichGpus(testtools.TestCase):
    """Every reason a GPU is or is not brought up, each on its own."""

    def setUp(self):
        super().setUp()
        root = self.useFixture(fixtures.TempDir()).path
        self.ledger = ledger_mod.Ledger(root)
        self.addCleanup(self.ledger.close)

    def plan(self, gpus, types, mig_gpus=()):
        config = devices_conf.DeviceConfig(types=tuple(types))
        return [(s.gpu, s.why) for s in bring_up.plan(
            config, model.HostSnapshot(gpus=tuple(gpus)), self.ledger,
            set(mig_gpus))]

    def type(self, *addresses):
        return devices_conf.TypeConfig(
            type_id='nvidia-1150', group='mdev_nvidia-1150',
            device_addresses=tuple(addresses))

    def test_table(self):
        listed = self.type('0000:26:00.0')
        default = self.type()
        self.ledger.remember_type_names({
            ('pci_0000_41_00_0', 'nvidia-1150'): ('NVIDIA L40S-4Q', None)})
        cases = (
            # (GPU, types, MIG GPUs, brought up because)
            (_gpu(0x26), [listed], (), 'nova.conf lists'),
            (_gpu(0x27), [listed], (), None),
            (_gpu(0x27), [listed, default], (), 'a type without'),
            (_gpu(0x41), [listed], (), 'the ledger'),
            (_gpu(0x27, vendor='0x1002'), [default], (), None),
            (_gpu(0x26, enabled=16), [listed], (), None),
            (_gpu(0x26, total=0), [listed], (), None),
            (_gpu(0x26), [listed], ('0000:26:00.0',), None),
            (_gpu(0x27), [], (), None),
            # Passed through whole (vfio-pci), even where nova.conf or the
            # ledger names it; no driver read: as NVIDIA's.
            (_gpu(0x26, driver='vfio-pci'), [listed, default], (), None),
            (_gpu(0x41, driver='vfio-pci'), [listed], (), None),
            (_gpu(0x26, driver=None), [listed], (), 'nova.conf lists'),
        )
        for gpu, types, mig_gpus, why in cases:
            got = self.plan([gpu], types, mig_gpus)
            if why is None:
                self.assertEqual([], got, (gpu, types, mig_gpus))
            else:
                ((address, reason),) = got
                self.assertEqual(gpu.address, address)
                self.assertIn(why, reason)


class TestCrashDuringBringUp(testtools.TestCase):
    """Killed at each step of the bring-up: the next start finishes it."""

    CASES = (
        ('a100-sriov', ['pci_0000_41_00_0', 'pci_0000_41_00_0',
                        'pci_0000_c1_00_0'],
         ('bring_up.vfs_enabled:1', 'bring_up.vfs_enabled:2',
          'recreate.device_created:1', 'recreate.device_created:2')),
        ('l40s-vfio', ['pci_0000_26_00_0', 'pci_0000_c1_00_0'],
         ('bring_up.vfs_enabled:1', 'recreate.device_created:1')),
        ('a100-mig-vfio', ['pci_0000_61_00_0', 'pci_0000_61_00_0'],
         ('mig.intent_written:1', 'mig.mode_set:1',
          'mig.instance_created:1', 'mig.instance_created:2',
          'recreate.device_created:1')),
    )

    def test_killed_at_each_step(self):
        runs = 0
        for profile, gpus, points in self.CASES:
            for point in points:
                with self.subTest(profile=profile, point=point):
                    self._killed_at(profile, gpus, point)
                    runs += 1
        self.assertEqual(11, runs)

    def _killed_at(self, profile: str, gpus: list[str], point: str):
        directory = self.useFixture(fixtures.TempDir()).path
        al = lifecycle.build(directory, profile)
        lifecycle.start(al, directory)      # as the first start does
        held = {}
        for n, gpu in enumerate(gpus):
            claim = al.claim('inst-%d' % n, lifecycle.alloc(al, gpu))
            held.update({d.device_id: (d.parent, d.type_id)
                         for d in claim.devices})
        al.backend.reboot()
        al.ledger.close()
        proc = test_allocator_processes.child(
            directory, profile, 'start', crash=point)
        out, err = proc.communicate(timeout=120)
        self.assertEqual(-9, proc.returncode, err)
        self.assertEqual('', out)
        # The next start, in this process.
        al = lifecycle.build(directory, profile)
        self.addCleanup(al.ledger.close)
        _, left, _ = lifecycle.start(al, directory)
        self.assertEqual([], left)
        on_host = {d.device_id: (d.parent, d.type_id)
                   for d in al.scan().mediated_devices}
        self.assertEqual(held, {k: v for k, v in on_host.items()
                                if k in held})
        entries = [e for e in al.ledger.all() if e.consumer]
        self.assertEqual(sorted(held), sorted(e.device_id for e in entries))
        self.assertEqual({'active'}, {e.state for e in entries})
        self.assertEqual({}, al.ledger.mig_intents())
        # And one more start changes nothing.
        steps, left, actions = lifecycle.start(al, directory)
        self.assertEqual(([], []), (steps, left))
        self.assertEqual([], [a for a in actions if a.kind != 'foreign'])
