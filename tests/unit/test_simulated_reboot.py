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
"""A simulated host reboots as a real one does, for every profile.

What goes and what stays: the field notes' "Host reboots" (VFs until
sriov-manage -e, GPU instances always, MIG mode as the model says, mdevs
unless mdevctl makes them).
"""

import os

import fixtures
import testtools

from vgpu_nova_ext.host import simulated
from vgpu_nova_ext.host.simulated import specs


def _fill(backend) -> list[str]:
    """A device on each GPU with room: what a busy host holds."""
    made = []
    for name in [g.name for g in backend.scan().gpus]:
        gpu = next(g for g in backend.scan().gpus if g.name == name)
        room = [(p.name, t.id) for p in gpu.parents for t in p.types
                if t.available_instances]
        if room:
            parent, type_id = room[0]
            device_id = backend.new_device_id(parent, type_id)
            backend.create_device(parent, type_id, device_id)
            made.append(device_id)
    return made


class TestReboot(testtools.TestCase):

    def test_every_profile(self):
        for name in simulated.builtin_profiles():
            with self.subTest(profile=name):
                self._reboot(name)

    def _reboot(self, name: str) -> None:
        root = self.useFixture(fixtures.TempDir()).path
        backend = simulated.SimulatedBackend(name, root=root)
        self.addCleanup(backend.close)
        profile = backend.profile
        before = backend.scan()
        made = _fill(backend)
        self.assertTrue(made, 'profile %s holds no device' % name)
        mig_before = {g.address: g.mig.enabled for g in backend.scan().gpus
                      if g.mig is not None}
        mdevctl = os.path.join(root, 'mdevctl.d')   # outside sysfs: kept
        os.makedirs(mdevctl)
        backend.reboot()
        after = backend.scan()
        self.assertEqual((), after.mediated_devices)
        self.assertEqual({g.address for g in before.gpus if not g.virtual},
                         {g.address for g in after.gpus if not g.virtual})
        self.assertTrue(os.path.isdir(mdevctl))
        for spec in profile.gpus:
            gpu = next(g for g in after.gpus if g.name == spec.name)
            # Still under NVIDIA's driver (a GPU passed through is not).
            self.assertEqual(None if gpu.virtual else 'nvidia', gpu.driver)
            if spec.model.sharing == specs.SRIOV:
                # No VF until sriov-manage -e; the GPU shows, idle.
                self.assertEqual((0, spec.model.sriov_vfs, ()), (
                    gpu.sriov_num_vfs, gpu.sriov_total_vfs, gpu.parents))
            else:
                # Its types, with all their room again.
                full = {t.id: t.max_instance for t in spec.model.types}
                for parent in gpu.parents:
                    self.assertEqual(
                        {t.id for t in parent.types}, set(full))
            if spec.model.mig_profiles:
                self.assertEqual((), gpu.mig.instances)
                self.assertEqual(
                    mig_before.get(spec.address, False) and
                    spec.model.mig_mode_after_reboot == specs.MIG_MODE_KEPT,
                    gpu.mig.enabled)
        # sriov-manage -e brings each SR-IOV GPU's VFs back, untyped.
        for spec in profile.gpus:
            if spec.model.sharing != specs.SRIOV:
                continue
            backend.mig_command(spec.address, 'sriov_manage')
            gpu = next(g for g in backend.scan().gpus
                       if g.name == spec.name)
            self.assertEqual(spec.model.sriov_vfs, gpu.sriov_num_vfs)
            self.assertEqual(spec.model.sriov_vfs, len(gpu.parents))
            if spec.model.vfio:
                for parent in gpu.parents:
                    current = backend.reader.vfio_current(
                        backend.reader._resolve(os.path.join(
                            root, 'sys', 'bus', 'pci', 'devices',
                            parent.address)))
                    self.assertEqual(0, current, parent.address)
            # Running it again changes nothing (idempotent).
            backend.mig_command(spec.address, 'sriov_manage')
            self.assertEqual(spec.model.sriov_vfs, len(next(
                g for g in backend.scan().gpus
                if g.name == spec.name).parents))
        # The host takes devices again where no GPU instance is needed.
        if not any(s.model.mig_profiles for s in profile.gpus):
            self.assertEqual(len(made), len(_fill(backend)))

    def test_a_kernel_in_another_process_sees_the_reboot(self):
        root = self.useFixture(fixtures.TempDir()).path
        backend = simulated.SimulatedBackend('l40s-vfio', root=root)
        self.addCleanup(backend.close)
        other = simulated.SimulatedBackend(root=root)
        self.addCleanup(other.close)
        self.assertTrue(_fill(other))
        backend.reboot()
        self.assertEqual((), other.scan().mediated_devices)
        address = backend.profile.gpus[0].address
        other.mig_command(address, 'sriov_manage')
        self.assertTrue(backend.scan().gpus[0].parents)
        # The other's kernel writes to the VFs that came back.
        self.assertTrue(_fill(other))
        self.assertEqual(1, len(backend.scan().mediated_devices))
