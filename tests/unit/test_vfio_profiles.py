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
"""Today's GPUs on NVIDIA's vendor-specific VFIO, as simulated hosts.

The profiles carry NVIDIA's published per-GPU maximums; the simulated
driver enforces them. What this project reports for each type (from the
type's name alone, as on a real host without NVML) must never exceed them.
"""

import dataclasses
import os

from tests import configs
from tests.unit import base
from tests.unit import lifecycle
from vgpu_nova_ext.conf import devices as devices_conf
from vgpu_nova_ext import exception
from vgpu_nova_ext import findings
from vgpu_nova_ext.host import model
from vgpu_nova_ext.host import nvml
from vgpu_nova_ext.host import simulated
from vgpu_nova_ext.host import vfio
from vgpu_nova_ext import mapping

VFIO_PROFILES = ('a40-vfio', 'l40s-vfio', 'h100-vfio', 'h200-vfio',
                 'rtx-pro-6000-bw-vfio')


def _config(root: str, type_id: str) -> devices_conf.DeviceConfig:
    path = os.path.join(root, 'nova-%s.conf' % type_id)
    with open(path, 'w') as f:
        f.write('[devices]\nenabled_mdev_types = %s\n' % type_id)
    return configs.device_config([path])


class TestProfiles(base.TestCase):

    def test_each_names_its_source(self):
        for name in VFIO_PROFILES:
            profile = simulated.load_profile(name)
            self.assertTrue(profile.source, name)
            self.assertTrue(all(g.model.vfio for g in profile.gpus), name)

    def test_reported_capacity_never_exceeds_the_published_maximum(self):
        # Every type of every profile, on every GPU (mixed-size ones too).
        checked = 0
        for name in VFIO_PROFILES:
            profile = simulated.load_profile(name)
            backend = simulated.SimulatedBackend(profile)
            self.addCleanup(backend.close)
            snapshot = backend.scan()
            kernel = simulated.KernelModel(profile)
            for spec in profile.gpus:
                for vgpu_type in spec.model.types:
                    if vgpu_type.gpu_instance_profile:
                        continue    # MIG-backed: test_mig.py
                    plan = mapping.assign(
                        _config(self.root, vgpu_type.id), snapshot)
                    vfs = {n for n, _ in kernel._parents(spec)}
                    others = any(d.parent in vfs and d.type_id != vgpu_type.id
                                 for d in profile.mediated_devices)
                    served = [a for a in plan.gpus
                              if a.gpu.address == spec.address]
                    if not served:
                        # Only a GPU busy with another type serves nothing.
                        self.assertTrue(others, '%s %s on %s' % (
                            name, vgpu_type.name, spec.address))
                        continue
                    most = vgpu_type.most(spec.mixed_size)
                    self.assertLessEqual(
                        served[0].capacity, most,
                        '%s %s on %s' % (name, vgpu_type.name, spec.address))
                    if not others:
                        self.assertGreater(served[0].capacity, 0)
                    checked += 1
        self.assertGreater(checked, 80)


class TestVendorVfioLayout(base.TestCase):
    """The per-VF ``nvidia/`` directory, and its catalogue as a GPU fills."""

    profile = 'l40s-vfio'
    GPU = '0000:26:00.0'

    def setUp(self):
        super().setUp()
        self.backend = simulated.SimulatedBackend(self.profile)
        self.addCleanup(self.backend.close)

    def vfs(self):
        gpu = next(g for g in self.backend.scan().gpus
                   if g.address == self.GPU)
        return gpu.parents

    def vf_dir(self, vf_address):
        return os.path.join(self.backend.root, 'sys', 'bus', 'pci',
                            'devices', vf_address, vfio.NVIDIA_DIR)

    def test_files_of_a_vf(self):
        vf = self.vfs()[0]
        self.assertEqual(
            ['creatable_vgpu_types', 'current_vgpu_type', 'gpu_instance_id',
             'placement_id', 'vgpu_params', 'warm_update'],
            sorted(os.listdir(self.vf_dir(vf.address))))
        with open(os.path.join(self.vf_dir(vf.address), vfio.CREATABLE)) as f:
            listed = vfio.parse_creatable(f.read())
        self.assertIn((1150, 'NVIDIA L40S-4Q'), listed)
        self.assertEqual(23, len(listed))

    def test_catalogue_empties_as_the_gpu_fills(self):
        made = []
        for vf in self.vfs():
            try:
                self.backend.create_device(vf.name, 'nvidia-1155',
                                           vf.address)
            except Exception:
                break
            made.append(vf)
        self.assertEqual(2, len(made))      # L40S-24Q: two per GPU
        for vf in self.vfs():
            with open(os.path.join(self.vf_dir(vf.address),
                                   vfio.CREATABLE)) as f:
                text = f.read()
            # The header line alone: no VF can take anything now (a
            # time-sliced GPU holds one type at a time).
            self.assertEqual('ID    : vGPU Name\n', text, vf.address)
        free = next(vf for vf in self.vfs() if vf not in made)
        self.assertRaises(exception.DeviceError, self.backend.create_device,
                          free.name, 'nvidia-1155', free.address)


class TestMixedSizeMode(base.TestCase):
    """A GPU in NVIDIA's mixed-size mode holds fewer of some types."""

    def setUp(self):
        super().setUp()
        self.al = lifecycle.build(
            self.root, 'h100-vfio',
            config='[devices]\nenabled_mdev_types = nvidia-2505\n')
        self.addCleanup(self.al.ledger.close)

    def test_reported_with_what_mixed_size_mode_holds(self):
        snapshot = self.al.scan()
        modes = {g.address: g.mixed_size for g in snapshot.gpus}
        self.assertEqual({'0000:1b:00.0': False, '0000:43:00.0': True},
                         modes)
        plan = mapping.assign(_config(self.root, 'nvidia-2505'), snapshot)
        totals = {a.gpu.address: a.capacity for a in plan.gpus}
        # H100XM-16C: 6 per GPU in equal-size mode, 4 in mixed-size mode
        # (NVIDIA's Hopper vGPU type table).
        self.assertEqual({'0000:1b:00.0': 6, '0000:43:00.0': 4}, totals)
        (warning,) = [p for p in plan.problems
                      if p.code == 'gpu.mixed_size']
        self.assertEqual(findings.WARNING, warning.severity)
        self.assertIn('0000:43:00.0', warning.where)
        self.assertIn('nvidia-smi vgpu -shm 0', warning.fix)
        # The simulated driver agrees: the fifth device fails.
        gpu = next(g for g in snapshot.gpus if g.address == '0000:43:00.0')
        made = 0
        for vf in gpu.parents:
            try:
                self.al.backend.create_device(vf.name, 'nvidia-2505',
                                              vf.address)
            except Exception:
                break
            made += 1
        self.assertEqual(4, made)

    def test_unknown_mode_is_a_note(self):
        # Without NVML the mode is not known: said once, in check's notes.
        snapshot = self.al.scan()
        unknown = dataclasses.replace(snapshot, gpus=tuple(
            dataclasses.replace(g, mixed_size=None) for g in snapshot.gpus))
        plan = mapping.assign(_config(self.root, 'nvidia-2505'), unknown)
        self.assertEqual(1, len([n for n in plan.notes
                                 if 'mixed-size' in n]))
        self.assertEqual([], [p for p in plan.problems
                              if p.code == 'gpu.mixed_size'])


class _Facts(nvml.FactsSource):
    """NVML's answer for one GPU: what a driver with NVML would give."""

    def __init__(self, address, facts):
        self.address, self.answer = address, facts

    def describe(self):
        return 'test facts'

    def facts(self, gpu):
        return self.answer if gpu.address == self.address else None


class TestNvml(base.TestCase):

    def test_without_nvidia_driver_there_are_no_facts(self):
        # nvidia-ml-py is installed with the test requirements; this
        # machine has no NVIDIA driver, so NVML cannot start.
        import pynvml  # noqa: F401  (the package itself is there)
        self.assertIsNone(nvml.open_nvml())

    def test_names_fill_what_sysfs_does_not_show(self):
        backend = simulated.SimulatedBackend('a40-vfio')
        self.addCleanup(backend.close)
        snapshot = backend.scan()
        gpu = snapshot.gpus[0]
        blank = dataclasses.replace(snapshot, gpus=(dataclasses.replace(
            gpu, parents=tuple(dataclasses.replace(p, types=tuple(
                dataclasses.replace(t, name=None) for t in p.types))
                for p in gpu.parents)),) + snapshot.gpus[1:])
        self.assertIsNone(blank.gpus[0].type_name('nvidia-558'))
        facts = nvml.GpuFacts(mixed_size=True, type_names=(
            ('nvidia-558', 'NVIDIA A40-2Q'),))
        filled = nvml.apply(blank, _Facts(gpu.address, facts))
        self.assertEqual('NVIDIA A40-2Q',
                         filled.gpus[0].type_name('nvidia-558'))
        self.assertIsNone(filled.gpus[0].type_name('nvidia-557'))
        self.assertTrue(filled.gpus[0].mixed_size)
        self.assertIs(filled.gpus[1], blank.gpus[1])
        self.assertIs(blank, nvml.apply(blank, None))
        self.assertIsInstance(filled.gpus[0], model.PhysicalGPU)


# A host whose driver (NVML) says one vGPU of L40S-48Q per VM. NVIDIA's
# tables do not publish that figure; the built-in profiles leave it out.
PER_VM_PROFILE = '''
description: 2 x L40S whose NVML allows one L40S-48Q per VM
models:
  l40s:
    sharing: sriov
    vfio: true
    sriov_vfs: 32
    framebuffer_mb: 49152
    types:
      - {id: nvidia-1156, name: NVIDIA L40S-48Q, framebuffer_mb: 49152,
         max_instance: 1, max_per_vm: 1}
      - {id: nvidia-1155, name: NVIDIA L40S-24Q, framebuffer_mb: 24576,
         max_instance: 2}
gpus:
  - {address: "0000:26:00.0", model: l40s}
  - {address: "0000:c1:00.0", model: l40s}
'''


class TestMostPerVm(base.TestCase):
    """The driver's own figure for a type's most per VM, before a claim."""

    def build(self, type_id):
        path = os.path.join(self.root, 'per-vm.yaml')
        with open(path, 'w') as f:
            f.write(PER_VM_PROFILE)
        al = lifecycle.build(
            os.path.join(self.root, type_id), path,
            config='[devices]\nenabled_mdev_types = %s\n[mdev_%s]\n'
                   'max_unit = 2\n' % (type_id, type_id))
        self.addCleanup(al.ledger.close)
        return al

    def test_more_than_the_driver_allows_refused(self):
        al = self.build('nvidia-1156')
        gpus = sorted({t.gpu for t in al.targets.values()})
        exc = self.assertRaises(exception.CombinationRefused,
                                al.check_combination, 'i1',
                                lifecycle.alloc(al, *gpus))
        self.assertIn('at most 1 vGPU(s) of L40S-48Q in one VM', str(exc))
        self.assertIn('nothing was created', str(exc))
        self.assertEqual([], al.ledger.all())
        self.assertEqual((), al.backend.scan().mediated_devices)
        al.check_combination('i1', lifecycle.alloc(al, gpus[0]))

    def test_a_type_without_a_figure_combines(self):
        al = self.build('nvidia-1155')
        gpus = sorted({t.gpu for t in al.targets.values()})
        al.check_combination('i1', lifecycle.alloc(al, *gpus))
