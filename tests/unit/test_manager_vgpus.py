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
"""NVIDIA's vGPU manager's own view (NVML's active vGPUs), and stale vGPUs.

On simulated hosts laid out as the kernel's sysfs, whose NVML lists the
vGPUs in use and what :func:`manager.hold` leaves; the join that makes a
stale vGPU a finding; and the real NVML reader against a stand-in of
pynvml's calls (no NVIDIA driver can be loaded here).
"""

import dataclasses
import os
import types
import uuid

from tests import timeout
from vgpu_nova_ext.devices import ledger as ledger_mod
from vgpu_nova_ext import findings
from vgpu_nova_ext.host import model
from vgpu_nova_ext.host import nvml
from vgpu_nova_ext.host import simulated
from vgpu_nova_ext.host.simulated import manager
from vgpu_nova_ext import inventory
from vgpu_nova_ext import metrics
from vgpu_nova_ext.placement import ownership

VM_A = '11111111-2222-4333-8444-555555555555'
VM_B = '66666666-7777-4888-9999-aaaaaaaaaaaa'
STALE_MDEV = '0b1c3f4e-7a56-4d41-9a3e-2f0a1b2c3d4e'


class SimulatedHostCase(timeout.TestCase):

    profile = 'm60'

    def setUp(self):
        super().setUp()
        self.backend = simulated.SimulatedBackend(self.profile)
        self.addCleanup(self.backend.close)
        self.root = self.backend.root

    def gpu(self, snapshot, address):
        return next(g for g in snapshot.gpus if g.address == address)

    def in_use(self, path, vm=''):
        with open(os.path.join(path, simulated.IN_USE_MARK), 'w') as f:
            f.write(vm)


class TestSimulatedManager(SimulatedHostCase):

    def test_mdevs_in_use_and_held_ones(self):
        snapshot = self.backend.scan()
        gpu = snapshot.gpus[0]
        self.assertEqual((), gpu.manager_vgpus)
        parent = gpu.parents[0]
        used, idle = str(uuid.uuid4()), str(uuid.uuid4())
        for device_id in (used, idle):
            self.backend.create_device(parent.name, 'nvidia-18', device_id)
        # A device no guest uses: the manager runs no vGPU for it.
        self.assertEqual((), self.gpu(self.backend.scan(),
                                      gpu.address).manager_vgpus)
        self.in_use(os.path.join(self.root, 'sys/bus/mdev/devices', used),
                    VM_A)
        manager.hold(self.root, gpu.address, model.ManagerVgpu(
            'stale-vgpu', STALE_MDEV, 'nvidia-18', VM_B))
        seen = self.gpu(self.backend.scan(), gpu.address).manager_vgpus
        self.assertEqual(sorted([
            model.ManagerVgpu(manager.vgpu_uuid(used), used, 'nvidia-18',
                              VM_A),
            model.ManagerVgpu('stale-vgpu', STALE_MDEV, 'nvidia-18', VM_B)],
            key=lambda v: v.vgpu_uuid), list(seen))
        self.assertNotIn(idle, [v.device_id for v in seen])
        # The other GPU's manager runs none of them.
        other = [g for g in self.backend.scan().gpus
                 if g.address != gpu.address][0]
        self.assertEqual((), other.manager_vgpus)

    def test_a_mark_without_a_vm(self):
        gpu = self.backend.scan().gpus[0]
        used = str(uuid.uuid4())
        self.backend.create_device(gpu.parents[0].name, 'nvidia-18', used)
        self.in_use(os.path.join(self.root, 'sys/bus/mdev/devices', used),
                    'not a uuid')
        (vgpu,) = self.gpu(self.backend.scan(), gpu.address).manager_vgpus
        self.assertIsNone(vgpu.vm_id)


class TestSimulatedManagerVfio(SimulatedHostCase):

    profile = 'l40s-vfio'

    def test_a_vf_in_use(self):
        gpu = self.backend.scan().gpus[0]
        vf = gpu.parents[0]
        type_id = vf.types[0].id
        # A VF given a type is the device, named by its address.
        self.backend.create_device(vf.name, type_id, vf.address)
        self.in_use(os.path.join(self.root, 'sys/bus/pci/devices',
                                 vf.address, 'nvidia'), VM_A)
        (vgpu,) = self.gpu(self.backend.scan(), gpu.address).manager_vgpus
        self.assertEqual((None, type_id, VM_A),
                         (vgpu.device_id, vgpu.type_id, vgpu.vm_id))


class TestNotNvidia(timeout.TestCase):

    def test_mtty_has_no_manager(self):
        backend = simulated.SimulatedBackend('mtty')
        self.addCleanup(backend.close)
        self.assertIsNone(backend.scan().gpus[0].manager_vgpus)


def _entry(device_id, gpu, consumer, kind=model.MDEV):
    return ledger_mod.Entry(device_id=device_id, kind=kind, gpu=gpu,
                            parent=gpu, type_id='nvidia-18',
                            consumer=consumer, state=ledger_mod.ACTIVE,
                            origin='test', changed_at=0.0)


class TestStaleFindings(timeout.TestCase):
    """The whole table: which manager vGPU is accounted for, which not."""

    GPU, OTHER = 'pci_0000_84_00_0', 'pci_0000_85_00_0'

    def snapshot(self, vgpus, on_host=()):
        gpus = tuple(model.PhysicalGPU(
            name=name, address=address, vendor_id='0x10de', device_id=None,
            parents=(), manager_vgpus=vgpus if name == self.GPU else ())
            for name, address in ((self.GPU, '0000:84:00.0'),
                                  (self.OTHER, '0000:85:00.0')))
        devices = tuple(model.MediatedDevice(d, self.GPU, 'nvidia-18')
                        for d in on_host)
        return model.HostSnapshot(gpus=gpus, mediated_devices=devices)

    def stale(self, vgpu, entries=(), on_host=(), links=None):
        found = ownership.manager_findings(
            list(entries), links or {}, self.snapshot((vgpu,), on_host))
        for f in found:
            self.assertEqual(findings.OWNER_MANAGER_VGPU_UNKNOWN, f.code)
            self.assertEqual(vgpu.vgpu_uuid, f.where)
            self.assertIn('nvidia-smi vgpu -q -i 0000:84:00.0', f.fix)
        return bool(found)

    def test_table(self):
        mdev = model.ManagerVgpu('v1', STALE_MDEV, 'nvidia-18', VM_A)
        vf = model.ManagerVgpu('v2', None, 'nvidia-18', VM_A)
        no_vm = model.ManagerVgpu('v3', None, 'nvidia-18', None)
        held = _entry(STALE_MDEV, self.GPU, VM_A)
        vf_held = _entry('0000:84:00.4', self.GPU, VM_A, model.VF)
        for vgpu, entries, on_host, links, expected in (
                # mdev: on the host, in the ledger, neither.
                (mdev, (), (STALE_MDEV,), None, False),
                (mdev, (held,), (), None, False),
                (mdev, (), (), None, True),
                (mdev, (_entry('other', self.GPU, VM_A),), (), None, True),
                # vendor-VFIO: the VM holds a device on that GPU or not.
                (vf, (vf_held,), (), None, False),
                (vf, (_entry('0000:85:00.4', self.OTHER, VM_A,
                             model.VF),), (), None, True),
                (vf, (_entry('0000:84:00.4', self.GPU, VM_B,
                             model.VF),), (), None, True),
                (vf, (dataclasses.replace(vf_held, consumer=None,
                                          state=ledger_mod.FREE),),
                 (), None, True),
                (vf, (), (), None, True),
                # A migration's consumer stands for its instance.
                (vf, (_entry('0000:84:00.4', self.GPU, 'migration-1',
                             model.VF),), (), {'migration-1': VM_A}, False),
                (no_vm, (vf_held,), (), None, True)):
            self.assertEqual(expected, self.stale(vgpu, entries, on_host,
                                                  links),
                             (vgpu, entries, on_host, links))

    def test_no_nvml_says_nothing(self):
        snapshot = dataclasses.replace(self.snapshot(()), gpus=tuple(
            dataclasses.replace(g, manager_vgpus=None)
            for g in self.snapshot(()).gpus))
        self.assertEqual([], ownership.manager_findings([], {}, snapshot))
        self.assertIsNone(metrics.manager_rows(snapshot, [], {}))

    def test_metrics_rows(self):
        vgpus = (model.ManagerVgpu('v1', STALE_MDEV, 'nvidia-18', VM_A),
                 model.ManagerVgpu('v2', 'on-host', 'nvidia-18', VM_B))
        rows = metrics.manager_rows(
            self.snapshot(vgpus, on_host=('on-host',)), [], {})
        self.assertEqual({('v1', True), ('v2', False)},
                         {(r.vgpu, r.stale) for r in rows})


class _NvmlError(Exception):
    pass


def _stand_in_pynvml(active, mdevs, vms, kinds):
    """pynvml's vGPU calls as nvidia-ml-py defines them (no driver here)."""
    def mdev_uuid(vgpu):
        if mdevs.get(vgpu) is None:
            raise _NvmlError('NVML_ERROR_NOT_SUPPORTED')
        return mdevs[vgpu]
    return types.SimpleNamespace(
        NVMLError=_NvmlError,
        nvmlDeviceGetActiveVgpus=lambda handle: list(active),
        nvmlVgpuInstanceGetUUID=lambda vgpu: ('GPU-vgpu-%d' % vgpu).encode(),
        nvmlVgpuInstanceGetMdevUUID=mdev_uuid,
        nvmlVgpuInstanceGetVmID=lambda vgpu: (vms[vgpu], 1),
        nvmlVgpuInstanceGetType=lambda vgpu: kinds[vgpu])


class TestNvmlReader(timeout.TestCase):

    GPU = model.PhysicalGPU('pci_0000_84_00_0', '0000:84:00.0', '0x10de',
                            None, ())

    def test_active_vgpus_read(self):
        source = nvml.Nvml(_stand_in_pynvml(
            active=[7, 3], mdevs={7: STALE_MDEV.upper().encode(), 3: None},
            vms={7: VM_A.encode(), 3: b''}, kinds={7: 18, 3: 1414}))
        self.assertEqual((
            model.ManagerVgpu('GPU-vgpu-3', None, 'nvidia-1414', None),
            model.ManagerVgpu('GPU-vgpu-7', STALE_MDEV, 'nvidia-18', VM_A)),
            source._manager_vgpus(self.GPU, handle=object()))

    def test_a_failing_driver_means_not_known(self):
        pynvml = _stand_in_pynvml([1], {1: None}, {1: b''}, {1: 18})

        def fails(handle):
            raise _NvmlError('NVML_ERROR_NOT_SUPPORTED')
        pynvml.nvmlDeviceGetActiveVgpus = fails
        self.assertIsNone(nvml.Nvml(pynvml)._manager_vgpus(
            self.GPU, handle=object()))


class TestManagerVersionAndEcc(SimulatedHostCase):
    """What live migration must find the same on both hosts, as traits."""

    def test_unset_means_unknown(self):
        gpu = self.backend.scan().gpus[0]
        self.assertEqual((None, None), (gpu.manager_version, gpu.ecc))
        self.assertEqual((), inventory.host_traits(gpu))

    def test_set_and_traits(self):
        gpus = self.backend.scan().gpus
        manager.set_host(self.root, '550.90.07', {gpus[0].address: True,
                                                  gpus[1].address: False})
        first, second = self.backend.scan().gpus
        self.assertEqual(('550.90.07', True),
                         (first.manager_version, first.ecc))
        self.assertEqual(('CUSTOM_VGPU_MANAGER_550_90_07',
                          'CUSTOM_VGPU_ECC_ON'), inventory.host_traits(first))
        self.assertEqual(('CUSTOM_VGPU_MANAGER_550_90_07',
                          'CUSTOM_VGPU_ECC_OFF'),
                         inventory.host_traits(second))
        for trait in inventory.host_traits(first):
            # This project's traits: added and removed by it alone.
            self.assertTrue(inventory.is_managed_trait(trait))
        self.assertEqual('550.90.07', inventory.manager_version_of(
            'CUSTOM_VGPU_MANAGER_550_90_07'))
        self.assertIsNone(inventory.manager_version_of('CUSTOM_VGPU_ECC_ON'))


class TestNvmlVersionAndEcc(timeout.TestCase):

    def test_read(self):
        pynvml = _stand_in_pynvml([], {}, {}, {})
        pynvml.nvmlSystemGetDriverVersion = lambda: b'570.133.10'
        pynvml.nvmlDeviceGetEccMode = lambda handle: (1, 0)
        source = nvml.Nvml(pynvml)
        self.assertEqual('570.133.10', source._driver_version())
        self.assertTrue(source._ecc(object()))

    def test_a_board_without_ecc(self):
        pynvml = _stand_in_pynvml([], {}, {}, {})

        def not_supported(*args):
            raise _NvmlError('NVML_ERROR_NOT_SUPPORTED')
        pynvml.nvmlSystemGetDriverVersion = not_supported
        pynvml.nvmlDeviceGetEccMode = not_supported
        source = nvml.Nvml(pynvml)
        self.assertIsNone(source._driver_version())
        self.assertIsNone(source._ecc(object()))
