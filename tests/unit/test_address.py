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
from vgpu_nova_ext.host import address


class TestPCIAddress(timeout.TestCase):

    def test_forms_normalise_to_one(self):
        for text in ('0000:84:00.0', '84:00.0', '0000:84:00.0 ',
                     '0000:84:00.0'.upper(), 'pci_0000_84_00_0',
                     'PCI_0000_84_00_0'):
            self.assertEqual('0000:84:00.0',
                             address.normalize_pci_address(text), text)

    def test_domain_as_nvidia_smi_prints_it(self):
        # nvidia-smi writes eight digits of domain; operators copy it.
        for text, value in (('00000000:84:00.0', '0000:84:00.0'),
                            ('00000001:3B:00.0', '0001:3b:00.0'),
                            ('10000:e1:00.0', '10000:e1:00.0')):
            self.assertEqual(value, address.normalize_pci_address(text))
        # Never a device id (the kernel's own spelling only).
        self.assertFalse(address.is_device_id('00000000:84:00.0'))
        self.assertIsNone(address.normalize_pci_address('000000000:84:00.0'))

    def test_hex_is_lower_cased(self):
        self.assertEqual('0000:1a:1f.7',
                         address.normalize_pci_address('1A:1F.7'))

    def test_not_pci(self):
        for text in ('mtty_mtty', '84:00', '0000:84:00.8', '84:20.0',
                     '0000:84:00:0', 'g4:00.0', ''):
            self.assertIsNone(address.normalize_pci_address(text), text)

    def test_libvirt_name(self):
        self.assertEqual('pci_0000_84_00_0',
                         address.libvirt_name('0000:84:00.0'))
        self.assertEqual('mtty_mtty', address.virtual_name('mtty/mtty'))


class TestParseDeviceAddress(timeout.TestCase):

    def test_pci(self):
        parsed = address.parse_device_address('85:00.0')
        self.assertEqual(address.PCI, parsed.kind)
        self.assertEqual('0000:85:00.0', parsed.value)
        self.assertEqual('pci_0000_85_00_0', parsed.libvirt_name)

    def test_virtual(self):
        parsed = address.parse_device_address('mtty_mtty')
        self.assertEqual(address.VIRTUAL, parsed.kind)
        self.assertEqual('mtty_mtty', parsed.libvirt_name)

    def test_malformed_pci_names_the_form(self):
        for text in ('zz:00', '0000:84:00.9', 'pci_0000_84', ''):
            exc = self.assertRaises(ValueError,
                                    address.parse_device_address, text)
            self.assertIn('DDDD:BB:SS.F', str(exc))

    def test_garbage_names_both_forms(self):
        exc = self.assertRaises(ValueError, address.parse_device_address,
                                'my gpu!')
        self.assertIn('mtty_mtty', str(exc))
