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
"""The host reboots; nova-compute's start brings it back (issue 25).

Through Nova's API and its own harness: servers with vGPUs, the simulated
host rebooted (its VFs, GPU instances and devices gone, the guests dead),
nova-compute restarted with ``resume_guests_state_on_host_boot``: every
server that ran runs again with the very device it had, a stopped one gets
its device when its user starts it, Placement's allocations are unchanged
and the ownership audit finds nothing.
"""

import os

import fixtures
import os_resource_classes as orc

from tests.nova import test_driver
from vgpu_nova_ext.conf import devices as devices_conf
from vgpu_nova_ext import findings
from vgpu_nova_ext.host.simulated import kernel

IMAGE = test_driver.IMAGE


class RebootTests:
    """The reboot, on the host of the class it is mixed into."""

    servers = 3
    #: What the scheduler needs to find the GPUs' types, if anything.
    extra_spec: dict = {}
    #: Whether one more server holds two vGPUs (on two GPUs).
    two_vgpus = False

    def setUp(self):
        super().setUp()
        self.flags(resume_guests_state_on_host_boot=True)
        self.compute = self.start_vgpu_compute('host1')

    def boot(self) -> list[dict]:
        flavor = self._create_flavor(
            memory_mb=256, vcpu=1, disk=1, ephemeral=0,
            extra_spec=dict({'resources:VGPU': '1'}, **self.extra_spec))
        servers = [self._create_server(
            image_uuid=IMAGE, flavor_id=flavor, networks='none',
            expected_state='ACTIVE') for _ in range(self.servers)]
        if self.two_vgpus:
            servers.insert(0, self._create_server(
                image_uuid=IMAGE, flavor_id=self._create_flavor(
                    memory_mb=256, vcpu=1, disk=1, ephemeral=0,
                    extra_spec={'resources1:VGPU': '1',
                                'resources2:VGPU': '1',
                                'group_policy': 'isolate'}),
                networks='none', expected_state='ACTIVE'))
        return servers

    def held_by(self, servers) -> dict:
        """Each server's devices, type and allocations."""
        on_host = {d.device_id: (d.parent, d.type_id)
                   for d in self.host_devices(self.compute)}
        out = {}
        for server in servers:
            devices = self.guest_devices(self.compute, server)
            out[server['id']] = (
                sorted((d, on_host.get(d)) for d in devices),
                self._get_allocations_by_server_uuid(server['id']))
        return out

    def reboot_host(self) -> None:
        """The host reboots: the guests die with it, the kernel forgets."""
        ext = self.compute.driver._vgpu_ext()
        connection = self.compute.driver._host.get_connection()
        for domain in connection.listAllDomains(1):     # the running ones
            domain.destroy()
        ext.backend.reboot()
        self.assertEqual((), ext.backend.scan().mediated_devices)
        self.compute = self.restart_compute_service('host1')

    def test_every_server_gets_its_device_back(self):
        servers = self.boot()
        stopped = servers[-1]
        self._stop_server(stopped)
        before = self.held_by(servers)
        wanted = self.servers + (2 if self.two_vgpus else 0)
        self.assertEqual(wanted, len(
            {d for devices, _ in before.values() for d, _ in devices}))
        self.reboot_host()
        for server in servers[:-1]:
            self._wait_for_state_change(server, 'ACTIVE')
        # A stopped server's device is made again at the start (the
        # ledger's devices all are: a user may start it any time), and it
        # is its own when it starts.
        self._start_server(stopped)
        self.assertEqual(before, self.held_by(servers))
        # Nothing leaked, nothing doubled, nobody else's.
        held = [e for e in self.compute.driver._vgpu_ext().ledger.all()
                if e.consumer]
        self.assertEqual(wanted, len(held))
        self.assertEqual({e.device_id for e in held}, {
            d.device_id for d in self.host_devices(self.compute)
            if d.device_id in {e.device_id for e in held}})
        self.assertEqual([], self.audit())

    def audit(self) -> list[findings.Finding]:
        self.computes['host1'] = self.compute
        return test_driver.LiveMigrationBase.audit(self, 'host1')


class TestMdevHost(RebootTests, test_driver.DriverTestBase):
    """V100: mdevs on the GPUs; one server holds two vGPUs."""

    profile = 'v100x8'
    enabled_types = 'nvidia-197'
    two_vgpus = True


class TestMdevOnSriovGpus(RebootTests, test_driver.DriverTestBase):
    """A100 with vGPU 16: mdevs on the VFs, which a reboot takes."""

    profile = 'a100-sriov'
    enabled_types = 'nvidia-471'


class TestVendorVfio(RebootTests, test_driver.DriverTestBase):
    """L40S on NVIDIA's vendor VFIO: typed VFs, untyped by a reboot."""

    profile = 'l40s-vfio'
    enabled_types = 'nvidia-1150'


class TestMigBackedVendorVfio(RebootTests, test_driver.DriverTestBase):
    """A100 MIG-backed vGPUs: GPU instances gone, carved again first."""

    profile = 'a100-mig-vfio'
    enabled_types = 'nvidia-2303'
    servers = 2     # 3g.20gb x 2: one vGPU each

    def setUp(self):
        test_driver.DriverTestBase.setUp(self)
        gpu = '0000:61:00.0'
        self.device_addresses('nvidia-2303', gpu)
        devices_conf.register_type_opts(test_driver.nova_conf.CONF,
                                        'nvidia-2303')
        self.flags(mig_gpu_instances='3g.20gb:2', group='mdev_nvidia-2303')
        self.flags(resume_guests_state_on_host_boot=True)
        self.compute = self.start_vgpu_compute('host1')


class TestMigBackedHopper(RebootTests, test_driver.DriverTestBase):
    """H200 MIG-backed vGPUs: a reboot turns MIG mode off too."""

    profile = 'h200-vfio'
    enabled_types = 'nvidia-1414'

    def setUp(self):
        test_driver.DriverTestBase.setUp(self)
        self.device_addresses('nvidia-1414', '0000:19:00.0')
        devices_conf.register_type_opts(test_driver.nova_conf.CONF,
                                        'nvidia-1414')
        self.flags(mig_gpu_instances='1g.18gb:7', group='mdev_nvidia-1414')
        self.flags(resume_guests_state_on_host_boot=True)
        self.compute = self.start_vgpu_compute('host1')

    def test_mig_mode_set_again(self):
        self.boot()
        ext = self.compute.driver._vgpu_ext()
        ext.backend.reboot()
        (gpu,) = [g for g in ext.backend.scan().gpus
                  if g.address == '0000:19:00.0']
        self.assertFalse(gpu.mig.enabled)
        self.compute = self.restart_compute_service('host1')
        (gpu,) = [g for g in self.compute.driver._vgpu_ext().backend.scan()
                  .gpus if g.address == '0000:19:00.0']
        self.assertEqual((True, {'1g.18gb': 7}),
                         (gpu.mig.enabled, gpu.mig.layout()))


class TestAGpuThatDoesNotComeBack(test_driver.DriverTestBase):
    """One GPU's VFs cannot be enabled: the others are served."""

    profile = 'l40s-vfio'
    enabled_types = 'nvidia-1150'

    def setUp(self):
        super().setUp()
        self.flags(resume_guests_state_on_host_boot=True)
        self.compute = self.start_vgpu_compute('host1')
        # The same tries, without their pauses.
        self.useFixture(fixtures.MockPatch(
            'vgpu_nova_ext.devices.bring_up.BACKOFF', (0.0,) * 4))

    def boot(self) -> tuple[dict, str, str]:
        """A server, its GPU's address and its GPU's provider."""
        server = self._create_server(
            image_uuid=IMAGE, flavor_id=self.small_vgpu_flavor(),
            networks='none', expected_state='ACTIVE')
        ext = self.compute.driver._vgpu_ext()
        (entry,) = ext.ledger.of_consumer(server['id'])
        gpu = next(g for g in ext.backend.scan().gpus if g.name == entry.gpu)
        return server, gpu.address, self._get_provider_uuid_by_name(
            'host1_' + gpu.name)

    def test_the_others_are_served(self):
        bad, bad_gpu, bad_rp = self.boot()
        before = self.guest_devices(self.compute, bad)
        ext = self.compute.driver._vgpu_ext()
        faults = os.path.join(ext.backend.root, kernel.FAULTS,
                              'sriov_manage')
        os.makedirs(faults)
        with open(os.path.join(faults, bad_gpu), 'w') as f:
            f.write('always')
        RebootTests.reboot_host(self)
        # The GPU that did not come back keeps its provider, every unit
        # reserved, while its server holds an allocation there; the
        # node's resource update goes on (it would fail on a delete).
        inventory = self._get_provider_inventory(bad_rp)[orc.VGPU]
        self.assertEqual(inventory['total'], inventory['reserved'])
        self.assertEqual(1, self._get_provider_usages(bad_rp)[orc.VGPU])
        self._run_periodics()
        # The other GPU came back: a new server runs there.
        good, good_gpu, good_rp = self.boot()
        self.assertNotEqual(bad_gpu, good_gpu)
        self.assertEqual(1, self._get_provider_usages(good_rp)[orc.VGPU])
        # The operator fixes the GPU and restarts nova-compute: the
        # server's device is back, and its hard reboot runs it on it.
        os.unlink(os.path.join(faults, bad_gpu))
        self.compute = self.restart_compute_service('host1')
        inventory = self._get_provider_inventory(bad_rp)[orc.VGPU]
        self.assertEqual(0, inventory['reserved'])
        self._reboot_server(bad, hard=True, expected_state='ACTIVE')
        self.assertEqual(before, self.guest_devices(self.compute, bad))
