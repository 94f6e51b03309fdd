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
import os
import signal

import fixtures

from tests import timeout
from tests.unit import base
from vgpu_nova_ext import exception
from vgpu_nova_ext.host import base as host_base
from vgpu_nova_ext.host import simulated
from vgpu_nova_ext.host.simulated import kernel_writes
from vgpu_nova_ext.host import writes

PROFILE = """
description: two GPUs
models:
  board:
    sharing: time-sliced
    framebuffer_mb: 8192
    types:
      - [nvidia-18, GRID M60-2Q, 2048, 4, 60, 5120x2880]
      - [nvidia-22, GRID M60-8Q, 8192, 4, 60, 5120x2880]
gpus:
  - {address: "84:00.0", model: board}
  - {address: "0000:85:00.0", model: board}
mediated_devices:
  - {uuid: 4b20d080-1b54-4048-85b3-a6a62d165c01, parent: "0000:84:00.0",
     type: nvidia-18}
"""


class TestBuiltinProfiles(timeout.TestCase):

    def test_required_profiles_ship(self):
        for name in ('v100x8', 'p40', 'm60', 'a100-sriov', 'mtty'):
            self.assertIn(name, simulated.builtin_profiles())

    def test_every_profile_reads_back_as_described(self):
        for name in simulated.builtin_profiles():
            backend = host_base.load_backend('simulated', profile=name)
            self.addCleanup(backend.close)
            profile = backend.profile
            snap = backend.scan()
            self.assertEqual(len(profile.gpus), len(snap.gpus), name)
            self.assertEqual(
                sorted(d.uuid for d in profile.mediated_devices),
                sorted(d.uuid for d in snap.mediated_devices), name)
            for gpu_spec, gpu in zip(
                    sorted(profile.gpus, key=lambda g: g.name),
                    sorted(snap.gpus, key=lambda g: g.name)):
                self.assertEqual(gpu_spec.name, gpu.name)
                if gpu_spec.model.vfio:
                    # Vendor VFIO lists only what a VF can take now: with
                    # a type on the GPU, that type alone.
                    self.assertLessEqual(
                        set(gpu.supported_type_ids),
                        {t.id for t in gpu_spec.model.types})
                else:
                    self.assertEqual(
                        sorted(t.id for t in gpu_spec.model.types),
                        sorted(gpu.supported_type_ids))
                if gpu_spec.model.sharing == simulated.SRIOV:
                    self.assertEqual(gpu_spec.model.sriov_vfs,
                                     len(gpu.parents))
            self.assertTrue(profile.example_config, name)
            self.assertTrue(profile.source, name)

    def test_v100_matches_field_notes(self):
        backend = simulated.SimulatedBackend('v100x8')
        self.addCleanup(backend.close)
        snap = backend.scan()
        gpu = next(g for g in snap.gpus if g.address == '0000:1a:00.0')
        one_q = gpu.parents[0].type('nvidia-194')
        self.assertEqual('GRID V100DX-1Q', one_q.name)
        self.assertEqual(32, one_q.available_instances)
        # The tree keeps the real host's bridges.
        link = os.readlink(os.path.join(backend.root,
                                        'sys/class/mdev_bus/0000:89:00.0'))
        self.assertEqual('../../devices/pci0000:85/0000:85:00.0/0000:86:00.0'
                         '/0000:87:08.0/0000:89:00.0', link)

    def test_backend_cleans_up(self):
        backend = simulated.SimulatedBackend('mtty')
        root = backend.root
        self.assertTrue(os.path.isdir(root))
        backend.close()
        self.assertFalse(os.path.exists(root))


class TestKernelSemantics(base.TestCase):

    def _scan(self, text):
        profile = simulated.parse_profile(text, 'test')
        simulated.lay_out(profile, self.root)
        return self.scan()

    def test_time_sliced_holds_one_type(self):
        snap = self._scan(PROFILE)
        busy = next(g for g in snap.gpus if g.address == '0000:84:00.0')
        idle = next(g for g in snap.gpus if g.address == '0000:85:00.0')
        self.assertEqual(3, busy.parents[0].type('nvidia-18')
                         .available_instances)
        self.assertEqual(0, busy.parents[0].type('nvidia-22')
                         .available_instances)
        self.assertEqual(4, idle.parents[0].type('nvidia-18')
                         .available_instances)
        self.assertEqual(1, idle.parents[0].type('nvidia-22')
                         .available_instances)
        self.assertIn('max_instance=4',
                      busy.parents[0].type('nvidia-18').description)

    def test_sriov_vf_shows_one_until_full(self):
        profile = simulated.load_profile('a100-sriov')
        simulated.lay_out(profile, self.root)
        gpu = next(g for g in self.scan().gpus
                   if g.address == '0000:41:00.0')
        by_name = {p.name: p for p in gpu.parents}
        # VF 0000:41:00.4 holds the profile's nvidia-471 device.
        self.assertEqual(0, by_name['pci_0000_41_00_4'].type('nvidia-471')
                         .available_instances)
        self.assertEqual(1, by_name['pci_0000_41_00_5'].type('nvidia-471')
                         .available_instances)
        self.assertEqual(0, by_name['pci_0000_41_00_5'].type('nvidia-472')
                         .available_instances)
        self.assertEqual('pci_0000_41_02_3', gpu.parents[-1].name)

    def test_sriov_full_gpu_shows_zero_everywhere(self):
        profile = simulated.load_profile('a100-sriov')
        devices = tuple(
            base.model.MediatedDevice(
                uuid='00000000-0000-0000-0000-00000000000%d' % i,
                parent='pci_0000_61_00_%d' % (4 + i), type_id='nvidia-472')
            for i in range(2))
        simulated.lay_out(profile, self.root, devices)
        gpu = next(g for g in self.scan().gpus
                   if g.address == '0000:61:00.0')
        self.assertEqual(0, sum(p.type('nvidia-472').available_instances
                                for p in gpu.parents))

    def test_mtty_pool(self):
        profile = simulated.load_profile('mtty')
        devices = (base.model.MediatedDevice(
            uuid='00000000-0000-0000-0000-000000000001',
            parent='mtty_mtty', type_id='mtty-2'),)
        simulated.lay_out(profile, self.root, devices)
        parent = self.scan().gpus[0].parents[0]
        self.assertEqual(22, parent.type('mtty-1').available_instances)
        self.assertEqual(11, parent.type('mtty-2').available_instances)


class TestWatchedHost(timeout.TestCase):
    """A host written as a real one is (files), its kernel watching."""

    def setUp(self):
        super().setUp()
        self.root = self.useFixture(fixtures.TempDir()).path
        self.backend = simulated.SimulatedBackend('a40-vfio', root=self.root)
        self.kernel = simulated.SimulatedKernel.at(self.root)
        self.logs = self.useFixture(fixtures.FakeLogger(
            name='vgpu_nova_ext.host.simulated.kernel_writes'))
        self.enter(kernel_writes.watching(self.kernel))
        # Plain writes, as the privsep daemon makes them.
        self.backend.writer = writes

    def enter(self, context) -> None:
        context.__enter__()
        self.addCleanup(context.__exit__, None, None, None)

    def test_writes_carried_out_and_refusals_undone(self):
        vf, other = 'pci_0000_b1_00_4', 'pci_0000_b1_00_5'
        device = self.backend.new_device_id(vf, 'nvidia-566')
        self.backend.create_device(vf, 'nvidia-566', device)
        self.assertTrue(self.backend.device_exists(device))
        other_dir = self.backend._vfio_dir(other)
        self.backend._wait_until(
            lambda: not self.backend.available(other, 'nvidia-566'),
            'the write carried out', 'the GPU still had room')
        # A40-48Q takes the whole GPU: the kernel refuses another on it,
        # puts the VF's type back and says why. (The writer may read its
        # own value in the file meanwhile: refusals are the in-place
        # kernel's to report, see TestKernelSemantics.)
        writes.set_vf_vgpu_type(self.root, '0000:b1:00.5', 566)
        refused = 'the write of \'566\' to %s was refused' % os.path.join(
            other_dir, 'nvidia', 'current_vgpu_type')
        self.backend._wait_until(lambda: refused in self.logs.output,
                                 'the refusal', 'it was not logged')
        self.assertEqual(0, self.backend.reader.vfio_current(other_dir))
        self.backend.remove_device(device)
        self.assertFalse(self.backend.device_exists(device))

    def test_mdevs_on_a_time_sliced_gpu(self):
        backend = simulated.SimulatedBackend('m60', root=os.path.join(
            self.root, 'm60'))
        self.enter(kernel_writes.watching(
            simulated.SimulatedKernel.at(backend.root)))
        backend.writer = writes
        device = backend.new_device_id('pci_0000_84_00_0', 'nvidia-18')
        backend.create_device('pci_0000_84_00_0', 'nvidia-18', device)
        self.assertTrue(backend.device_exists(device))
        backend.remove_device(device)
        self.assertFalse(backend.device_exists(device))


class TestCrashAtomic(timeout.TestCase):
    """A writer killed inside a simulated create or remove.

    The kernel completes such a write even if the writer dies; so does the
    simulated kernel. The kill is real (SIGKILL of a child process in the
    middle of the change); where it lands is chosen by making the child's
    n-th os.symlink call kill it, the one part that is arranged.
    """

    GPU = '0000:84:00.0'
    FIRST = '11111111-1111-4111-8111-111111111111'
    SECOND = '22222222-2222-4222-8222-222222222222'

    def setUp(self):
        super().setUp()
        self.root = self.useFixture(fixtures.TempDir()).path
        self.backend = simulated.SimulatedBackend('m60', root=self.root)
        self.addCleanup(self.backend.close)

    def killed_during(self, change, call: str, number: int) -> None:
        """Run ``change`` in a child killed at its ``number``-th os.call."""
        pid = os.fork()
        if pid == 0:  # the child: dies in the middle of the change
            calls = [0]
            real = getattr(os, call)

            def dying(*args, **kwargs):
                calls[0] += 1
                if calls[0] == number:
                    os.kill(os.getpid(), signal.SIGKILL)
                return real(*args, **kwargs)

            setattr(os, call, dying)
            try:
                change()
            finally:
                os._exit(3)
        _, status = os.waitpid(pid, 0)
        self.assertTrue(os.WIFSIGNALED(status), status)
        self.assertTrue(os.path.exists(os.path.join(self.root,
                                                    simulated.JOURNAL)))

    def available(self) -> int:
        gpu = next(g for g in self.backend.scan().gpus
                   if g.address == self.GPU)
        return gpu.parents[0].type('nvidia-18').available_instances

    def ids(self) -> set[str]:
        return {d.device_id for d in self.backend.scan().mediated_devices}

    def test_killed_create_is_completed_by_the_next_write(self):
        self.killed_during(lambda: self.backend.create_device(
            'pci_0000_84_00_0', 'nvidia-18', self.FIRST), 'symlink', 2)
        # The next write finishes the first create, then makes its own.
        self.backend.create_device('pci_0000_84_00_0', 'nvidia-18',
                                   self.SECOND)
        self.assertEqual({self.FIRST, self.SECOND}, self.ids())
        self.assertEqual(2, self.available())
        self.assertFalse(os.path.exists(os.path.join(self.root,
                                                     simulated.JOURNAL)))

    def test_killed_create_is_completed_when_the_host_opens(self):
        self.killed_during(lambda: self.backend.create_device(
            'pci_0000_84_00_0', 'nvidia-18', self.FIRST), 'symlink', 3)
        again = simulated.SimulatedBackend('m60', root=self.root)
        self.addCleanup(again.close)
        self.assertEqual({self.FIRST}, self.ids())
        self.assertEqual(3, self.available())
        # Complete, as the kernel makes a device: all its entries there.
        device = os.path.join(self.root, 'sys', 'bus', 'mdev', 'devices',
                              self.FIRST)
        for entry in ('mdev_type', 'subsystem', 'remove'):
            self.assertTrue(os.path.lexists(os.path.join(device, entry)),
                            entry)
        self.assertFalse(os.path.exists(os.path.join(self.root,
                                                     simulated.JOURNAL)))

    def test_killed_remove_is_completed(self):
        self.backend.create_device('pci_0000_84_00_0', 'nvidia-18',
                                   self.FIRST)
        # os.replace: first the journal, then available_instances after
        # the device's files are gone.
        self.killed_during(lambda: self.backend.remove_device(self.FIRST),
                           'replace', 2)
        again = simulated.SimulatedBackend('m60', root=self.root)
        self.addCleanup(again.close)
        self.assertEqual(set(), self.ids())
        self.assertEqual(4, self.available())


class TestBadProfiles(timeout.TestCase):

    def _fails(self, text, *fragments):
        exc = self.assertRaises(exception.ProfileError,
                                simulated.parse_profile, text, 'bad.yaml')
        for fragment in fragments:
            self.assertIn(fragment, str(exc))
        return exc

    def test_not_yaml(self):
        self._fails('models: [', 'bad.yaml', 'not valid YAML')

    def test_missing_gpus(self):
        self._fails('models: {}', 'top level.gpus', 'required')

    def test_unknown_model(self):
        self._fails(PROFILE.replace('model: board}\n  - {address: "0000',
                                    'model: nope}\n  - {address: "0000'),
                    'gpus[0].model', "'nope'", 'board')

    def test_bad_address(self):
        self._fails(PROFILE.replace('"84:00.0"', '"84:00"'),
                    'gpus[0].address', "'84:00'")

    def test_bad_row(self):
        self._fails(PROFILE.replace('[nvidia-22, GRID M60-8Q, 8192, 4, 60, '
                                    '5120x2880]', '[nvidia-22]'),
                    'models.board.types[1]', 'a row is')

    def test_negative_number(self):
        self._fails(PROFILE.replace('framebuffer_mb: 8192',
                                    'framebuffer_mb: -1'),
                    'models.board.framebuffer_mb', 'whole number')

    def test_unknown_sharing(self):
        self._fails(PROFILE.replace('time-sliced', 'shared'),
                    'models.board.sharing', "'shared'")

    def test_device_on_unknown_parent(self):
        self._fails(PROFILE.replace('parent: "0000:84:00.0"',
                                    'parent: "0000:99:00.0"'),
                    'mediated_devices[0].parent', '0000:99:00.0')

    def test_device_of_unknown_type(self):
        self._fails(PROFILE.replace('type: nvidia-18', 'type: nvidia-99'),
                    'mediated_devices[0].type', 'nvidia-99')

    def test_two_types_on_a_time_sliced_gpu(self):
        text = PROFILE + """
  - {uuid: 4b20d080-1b54-4048-85b3-a6a62d165c02, parent: "0000:84:00.0",
     type: nvidia-22}
"""
        self._fails(text, 'one type at a time')

    def test_more_devices_than_the_gpu_holds(self):
        text = PROFILE.replace('type: nvidia-18', 'type: nvidia-22') + """
  - {uuid: 4b20d080-1b54-4048-85b3-a6a62d165c02, parent: "0000:84:00.0",
     type: nvidia-22}
"""
        self._fails(text, 'more than its max_instance 1')

    def test_unknown_builtin(self):
        exc = self.assertRaises(exception.ProfileError,
                                simulated.load_profile, 'h100')
        self.assertIn('v100x8', str(exc))

    def test_unreadable_path(self):
        exc = self.assertRaises(exception.ProfileError,
                                simulated.load_profile, '/nonexistent.yaml')
        self.assertIn('/nonexistent.yaml', str(exc))
