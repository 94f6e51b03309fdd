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
from vgpu_nova_ext.vendors import base
from vgpu_nova_ext.vendors import generic
from vgpu_nova_ext.vendors import nvidia


class TestNvidia(timeout.TestCase):

    def setUp(self):
        super().setUp()
        self.plugin = nvidia.NvidiaVendor()

    def test_names(self):
        cases = {
            'GRID M60-2Q': ('M60-2Q', 'Q'),
            'GRID V100DX-32C': ('V100DX-32C', 'C'),
            'GRID A100-4-20C': ('A100-4-20C', 'C'),
            'NVIDIA A40-2Q': ('A40-2Q', 'Q'),
            'GRID M10-2B4': ('M10-2B4', 'B'),
            'GRID P40-1A': ('P40-1A', 'A'),
        }
        for name, (short, series) in cases.items():
            info = self.plugin.describe_type('nvidia-1', name, None)
            self.assertEqual((short, series),
                             (info.short_name, info.series), name)

    def test_description(self):
        info = self.plugin.describe_type(
            'nvidia-18', 'GRID M60-2Q',
            'num_heads=4, frl_config=60, framebuffer=2048M, '
            'max_resolution=5120x2880, max_instance=4')
        self.assertEqual((2048, 4), (info.framebuffer_mb, info.max_per_gpu))

    def test_unparsable_description_is_unknown(self):
        info = self.plugin.describe_type('nvidia-18', None,
                                         'max_instance=many')
        self.assertIsNone(info.max_per_gpu)
        self.assertEqual('nvidia-18', info.short_name)

    def test_claims(self):
        self.assertTrue(self.plugin.claims('nvidia-18', None))
        self.assertTrue(self.plugin.claims('foo-1', '0x10de'))
        self.assertFalse(self.plugin.claims('mtty-1', None))


class TestVendors(timeout.TestCase):

    def test_loaded_by_stevedore_in_priority_order(self):
        vendors = base.Vendors()
        self.assertIsInstance(vendors.plugins[0], nvidia.NvidiaVendor)
        self.assertIsInstance(vendors.plugins[-1], generic.GenericVendor)
        self.assertIsInstance(vendors.for_type('mtty-1', None),
                              generic.GenericVendor)
        info = vendors.describe_type('mtty-2', None, 'Dual port serial',
                                     None)
        self.assertEqual('Dual port serial', info.short_name)
        self.assertIsNone(info.max_per_gpu)
