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
"""Time-sliced, MIG-backed vGPUs: several vGPUs on one GPU instance.

Blackwell (RTX PRO 6000) shares a GPU instance among several vGPUs of a
MIG-backed type; Ampere and Hopper hold one per instance. The NVIDIA
plugin reads it from the type's name and NVIDIA's tables, NVML's answer
wins where the host has it, capacity is instances times that, and the
simulated driver places several vGPUs on one instance.
"""

import collections
import json
import os
import types

from tests import configs
from tests.unit import base
from tests.unit import lifecycle
from tests.unit import test_cli
from vgpu_nova_ext import exception
from vgpu_nova_ext.host import mig
from vgpu_nova_ext.host import model
from vgpu_nova_ext.host import nvml
from vgpu_nova_ext.host import simulated
from vgpu_nova_ext.host import vfio
from vgpu_nova_ext import mapping
from vgpu_nova_ext.vendors import base as vendors_base
from vgpu_nova_ext.vendors import nvidia

GPU = '0001:04:00.0'
PARENT = 'pci_0001_04_00_0'


class TestNamesAgainstEveryProfile(base.TestCase):
    """The plugin's reading of each MIG-backed name, the whole table."""

    def test_every_mig_backed_type_of_every_built_in_profile(self):
        plugin = nvidia.NvidiaVendor()
        seen = 0
        for name in simulated.builtin_profiles():
            for spec in {g.model.name: g.model
                         for g in simulated.load_profile(name).gpus
                         }.values():
                for t in spec.types:
                    if t.gpu_instance_profile is None:
                        continue
                    seen += 1
                    info = plugin.describe_type(t.id, t.name, None)
                    self.assertEqual(
                        (t.gpu_instance_profile, t.max_per_gi),
                        (info.gpu_instance_profile, info.max_per_gi),
                        '%s: %s' % (name, t.name))
        # A100, H100, H200 (one per instance) and the RTX PRO 6000.
        self.assertGreater(seen, 20)

    def test_one_per_instance_before_blackwell(self):
        info = nvidia.NvidiaVendor().describe_type(
            'nvidia-1', 'NVIDIA A100-2-10C', None)
        self.assertEqual(('2g.10gb', 1),
                         (info.gpu_instance_profile, info.max_per_gi))

    def test_time_sliced_types_have_no_instance(self):
        info = nvidia.NvidiaVendor().describe_type(
            'nvidia-1', 'NVIDIA RTX Pro 6000 Blackwell DC-24Q', None)
        self.assertEqual((None, None),
                         (info.gpu_instance_profile, info.max_per_gi))


class _NvmlError(Exception):
    pass


INVALID_PROFILE = 0xFFFFFFFF


def _stand_in(profile_of: dict, per_gi: dict | None):
    """pynvml's two per-type MIG calls, as nvidia-ml-py defines them."""
    def profile_id(number):
        return profile_of[number]

    def most(number):
        if number not in per_gi:
            raise _NvmlError('NVML_ERROR_NOT_SUPPORTED')
        return per_gi[number]
    calls = types.SimpleNamespace(
        NVMLError=_NvmlError,
        nvmlVgpuTypeGetGpuInstanceProfileId=profile_id)
    if per_gi is not None:
        calls.nvmlVgpuTypeGetMaxInstancesPerGpuInstance = most
    return calls


class TestNvmlReader(base.TestCase):

    PROFILES = (mig.GIProfile('1g.24gb', 14, 2, (0, 2, 4, 6)),
                mig.GIProfile('2g.48gb', 5, 4, (0, 4)))

    def test_profile_and_most_per_instance(self):
        source = nvml.Nvml(_stand_in(
            {2722: 14, 2725: 5, 2707: INVALID_PROFILE}, {2722: 2, 2725: 4}))
        self.assertEqual(
            (('nvidia-2722', '1g.24gb', 2), ('nvidia-2725', '2g.48gb', 4)),
            source._type_gi([2722, 2725, 2707], self.PROFILES))

    def test_a_driver_without_the_per_instance_call_has_one(self):
        source = nvml.Nvml(_stand_in({2722: 14}, None))
        self.assertEqual((('nvidia-2722', '1g.24gb', 1),),
                         source._type_gi([2722], self.PROFILES))

    def test_a_refusal_of_the_call_means_one(self):
        source = nvml.Nvml(_stand_in({2722: 14}, {}))
        self.assertEqual((('nvidia-2722', '1g.24gb', 1),),
                         source._type_gi([2722], self.PROFILES))

    def test_nvml_wins_over_the_name(self):
        # A name that says 2 per instance; the driver says 3.
        vgpu_type = model.VGPUType('nvidia-2722',
                                   'NVIDIA RTX Pro 6000 Blackwell DC-1-12C',
                                   1, 'vfio-pci')
        gpu = model.PhysicalGPU(PARENT, GPU, '0x10de', '0x2bb5', (
            model.ParentDevice('pci_0001_04_00_4', '0001:04:00.4',
                               (vgpu_type,)),))
        vendors = vendors_base.Vendors([nvidia.NvidiaVendor()])
        self.assertEqual(2, vendors.describe_on(gpu, 'nvidia-2722')
                         .max_per_gi)

        class Facts(nvml.FactsSource):
            def facts(self, gpu):
                return nvml.GpuFacts(type_gi=(('nvidia-2722', '1g.24gb',
                                               3),))
        told = nvml.apply(model.HostSnapshot(gpus=(gpu,)),
                          Facts()).gpus[0]
        info = vendors.describe_on(told, 'nvidia-2722')
        self.assertEqual(('1g.24gb', 3),
                         (info.gpu_instance_profile, info.max_per_gi))


class TestSeveralOnOneInstance(base.TestCase):
    """nvidia-2722 (DC-1-12C): two per 1g.24gb instance, four instances."""

    TYPE = 'nvidia-2722'

    def setUp(self):
        super().setUp()
        config = ('[devices]\nenabled_mdev_types = %s\n[mdev_%s]\n'
                  'device_addresses = %s\nmig_gpu_instances = 1g.24gb:4\n'
                  % (self.TYPE, self.TYPE, GPU))
        self.al = lifecycle.build(self.root, 'rtx-pro-6000-bw-vfio',
                                  config=config)
        self.addCleanup(self.al.ledger.close)
        self.conf = configs.device_config(
            [os.path.join(self.root, 'nova.conf')])
        self.al.carve_mig_layouts(self.conf)
        self.al.targets = lifecycle.targets_of(self.al, self.conf)

    def instance_of(self, vf):
        with open(os.path.join(self.al.backend.root, 'sys', 'bus', 'pci',
                               'devices', vf, 'nvidia',
                               'gpu_instance_id')) as f:
            return int(f.read())

    def test_capacity_is_instances_times_most_per_instance(self):
        (served,) = mapping.assign(self.conf, self.al.scan()).gpus
        self.assertEqual((self.TYPE, 8, '1g.24gb', 2), (
            served.type_id, served.capacity,
            served.type_info.gpu_instance_profile,
            served.type_info.max_per_gi))

    def test_two_to_each_instance_then_full(self):
        vfs = []
        for n in range(8):
            (device,) = self.al.claim('inst-%d' % n, lifecycle.alloc(
                self.al, PARENT)).devices
            vfs.append(device.device_id)
        per_instance = collections.Counter(self.instance_of(vf)
                                           for vf in vfs)
        gpu = next(g for g in self.al.scan().gpus if g.address == GPU)
        self.assertEqual({gi.id: 2 for gi in gpu.mig.instances},
                         dict(per_instance))
        self.assertRaises(exception.ClaimError, self.al.claim, 'inst-8',
                          lifecycle.alloc(self.al, PARENT))
        # One freed: the next lands on the instance that has room again.
        freed = self.instance_of(vfs[3])
        self.al.release_instance('inst-3')
        (device,) = self.al.claim('inst-9', lifecycle.alloc(
            self.al, PARENT)).devices
        self.assertEqual(freed, self.instance_of(device.device_id))
        self.assertEqual(
            str(int(self.TYPE.split('-')[1])),
            open(os.path.join(self.al.backend.root, 'sys', 'bus', 'pci',
                              'devices', device.device_id, 'nvidia',
                              vfio.CURRENT)).read().strip())


class TestCommands(test_cli.CLITestCase):
    """inventory says how many share one instance (table and JSON)."""

    def test_inventory(self):
        common = self.mig_host('rtx-pro-6000-bw-vfio', 'nvidia-2723', GPU,
                               '1g.24gb:4')
        code, out, err = self.run_cli(*common, 'reconcile')
        self.assertEqual(0, code, err)
        code, out, err = self.run_cli(*common, 'inventory')
        self.assertEqual(0, code, err)
        self.assertIn('MIG GPU instances: %s 1g.24gb: 4 (nvidia-2723: 4 per '
                      'instance)' % GPU, out)
        code, out, err = self.run_cli(*common, 'inventory', '--format',
                                      'json')
        body = json.loads(out)
        self.assertEqual([{'address': GPU, 'layout': '1g.24gb: 4',
                           'type': 'nvidia-2723', 'vgpus_per_instance': 4}],
                         body['gpu_instances'])
        (provider,) = body['providers']
        self.assertEqual(16, provider['total'])
        self.assertNoTraceback(out, err)
