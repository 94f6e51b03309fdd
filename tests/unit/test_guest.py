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

from tests import timeout
from tests.unit import schemas
from vgpu_nova_ext.devices import guest
from vgpu_nova_ext.host import model

DOMAIN = """<domain type='kvm'>
  <name>instance-00000001</name>
  <uuid>0b0d6a4e-9ef4-4fb8-a9c5-0f1a1f2e7a11</uuid>
  <memory unit='KiB'>2097152</memory>
  <vcpu>2</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    %s
  </devices>
</domain>"""
MDEV = 'c0b4e8a2-3f61-4f0e-9d1e-5b2f0c7a9d10'
VF = '0000:41:00.4'


class TestHostdev(timeout.TestCase):

    def test_mdev(self):
        xml = guest.hostdev_xml(model.MDEV, MDEV)
        self.assertEqual(
            '<hostdev mode="subsystem" type="mdev" managed="no" '
            'model="vfio-pci" display="off"><source><address uuid="%s" />'
            '</source></hostdev>' % MDEV, xml)

    def test_vf_is_not_managed(self):
        xml = guest.hostdev_xml(model.VF, VF)
        self.assertIn('type="pci" managed="no"', xml)
        self.assertIn('<address domain="0x0000" bus="0x41" slot="0x00" '
                      'function="0x4" />', xml)

    def test_domain_with_vgpus_is_valid_for_libvirt(self):
        devices = '\n'.join([
            guest.hostdev_xml(model.MDEV, MDEV),
            guest.hostdev_xml(model.MDEV, MDEV.replace('c0', 'd1'),
                              display=True),
            guest.hostdev_xml(model.VF, VF)])
        schemas.assert_valid(self, 'domain.rng', DOMAIN % devices)

    def test_schema_check_can_fail(self):
        bad = guest.hostdev_xml(model.MDEV, MDEV).replace(
            'model="vfio-pci"', 'model="cuda"')
        schema, etree = schemas.relaxng(self, 'domain.rng')
        self.assertFalse(schema.validate(etree.fromstring(
            (DOMAIN % bad).encode())))

    def test_devices_read_back_from_a_domain(self):
        devices = guest.hostdev_xml(model.MDEV, MDEV) + guest.hostdev_xml(
            model.VF, VF)
        self.assertEqual([MDEV, VF],
                         guest.devices_in_domain(DOMAIN % devices))

    def test_bad_vf_address(self):
        self.assertRaises(ValueError, guest.hostdev_xml, model.VF, 'x')
