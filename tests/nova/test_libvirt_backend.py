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
"""The libvirt backend against the fake libvirt of the nova wheel."""

import os
import uuid

import fixtures

from tests import configs
from tests.nova import fake_libvirt
from tests import timeout
from tests.unit import lifecycle
from tests.unit import schemas
from vgpu_nova_ext.devices import factory
from vgpu_nova_ext import exception
from vgpu_nova_ext.host import libvirt as libvirt_backend
from vgpu_nova_ext.host import simulated

GPU84 = 'pci_0000_84_00_0'


class TestNodedevXML(timeout.TestCase):

    def test_valid_for_libvirt(self):
        xml = libvirt_backend.nodedev_xml(GPU84, 'nvidia-18',
                                          str(uuid.uuid4()))
        schemas.assert_valid(self, 'nodedev.rng', xml)

    def test_names(self):
        self.assertEqual(
            ['mdev_4b20d080_1b54_4048_85b3_a6a62d165c01_0000_84_00_0',
             'mdev_4b20d080_1b54_4048_85b3_a6a62d165c01'],
            libvirt_backend.nodedev_names(
                '4b20d080-1b54-4048-85b3-a6a62d165c01', GPU84))


class TestLibvirtBackend(timeout.TestCase):

    def setUp(self):
        super().setUp()
        fake = fake_libvirt.load()
        if fake is None:
            message = 'the nova package (and its fake libvirt) is missing'
            if os.environ.get('VGPU_NOVA_EXT_REQUIRE_NOVA'):
                self.fail(message)
            self.skipTest(message)
        self.fake = fake
        self.dir = self.useFixture(lifecycle_fixtures()).path
        # The kernel side: a simulated host that libvirt drives.
        self.kernel = simulated.SimulatedBackend(
            'm60', root=os.path.join(self.dir, 'host'))
        self.addCleanup(self.kernel.close)
        self.conn = fake_libvirt.connection_class(fake)(
            self.kernel, lambda xml: schemas.assert_valid(
                self, 'nodedev.rng', xml))
        # Its own sysfs writes (for devices libvirt does not know) reach
        # the same simulated kernel, through the writer the simulated
        # host's backend hands its kernel's writes to.
        self.backend = libvirt_backend.LibvirtBackend(
            sysfs_root=self.kernel.root, connection=self.conn,
            libvirt_module=fake, timeout=2)
        self.backend.writer = self.kernel.writer

    def test_define_start_autostart_then_stop_undefine(self):
        device_id = str(uuid.uuid4())
        self.backend.create_device(GPU84, 'nvidia-18', device_id)
        (name,) = self.conn.defined
        device = self.conn.defined[name]
        self.assertTrue(device.isActive())
        self.assertTrue(device.autostart())
        self.assertTrue(self.backend.device_exists(device_id))
        self.assertEqual(3, self.backend.available(GPU84, 'nvidia-18'))
        self.backend.remove_device(device_id)
        self.assertEqual({}, self.conn.defined)
        self.assertFalse(self.backend.device_exists(device_id))

    def test_reboot_brings_devices_back(self):
        device_id = str(uuid.uuid4())
        self.backend.create_device(GPU84, 'nvidia-18', device_id)
        self.kernel.remove_device(device_id)       # power off
        self.conn.boot()
        self.assertTrue(self.backend.device_exists(device_id))

    def test_create_again_after_reboot_reuses_the_definition(self):
        device_id = str(uuid.uuid4())
        self.backend.create_device(GPU84, 'nvidia-18', device_id)
        self.kernel.remove_device(device_id)
        self.backend.create_device(GPU84, 'nvidia-18', device_id)
        self.assertEqual(1, len(self.conn.defined))
        self.assertTrue(self.backend.device_exists(device_id))

    def test_device_made_through_sysfs_is_removed_through_sysfs(self):
        device_id = str(uuid.uuid4())
        self.kernel.create_device(GPU84, 'nvidia-18', device_id)
        self.backend.remove_device(device_id)
        self.assertFalse(self.backend.device_exists(device_id))

    def test_no_room(self):
        for _ in range(4):
            self.backend.create_device(GPU84, 'nvidia-18', str(uuid.uuid4()))
        self.assertRaises(exception.DeviceError, self.backend.create_device,
                          GPU84, 'nvidia-18', str(uuid.uuid4()))

    def test_allocator_on_libvirt(self):
        planned = lifecycle.build(self.dir, 'm60')
        planned.ledger.close()
        conf = configs.own_conf(state_path=os.path.join(self.dir, 'state'))
        al = factory.open_host(conf, lifecycle.HOST, backend=self.backend,
                               targets=planned.targets).allocator
        self.addCleanup(al.ledger.close)
        claim = al.claim('i1', lifecycle.alloc(al, GPU84))
        self.assertEqual(1, len(self.conn.defined))
        al.release('i1')
        self.assertEqual({}, self.conn.defined)
        self.assertFalse(self.backend.device_exists(
            claim.devices[0].device_id))


def lifecycle_fixtures():
    return fixtures.TempDir()
