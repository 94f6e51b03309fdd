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

    def test_found_once_per_process(self):
        # A stevedore scan of every installed package's entry points: the
        # planner, the allocator, the MIG planner and licensing share it.
        self.assertIs(base.loaded(), base.loaded())
        self.assertEqual(['nvidia', 'generic'], base.loaded().names)

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


class TestSeveralVgpusInOneGuest(timeout.TestCase):
    """NVIDIA's rules, checked by its plugin before anything is made."""

    def vgpus(self, *names: str, description: str | None = None):
        vendors = base.Vendors([nvidia.NvidiaVendor(),
                                generic.GenericVendor()])
        return vendors, [vendors.describe_type('nvidia-1', '0x10de', n,
                                               description) for n in names]

    def problem(self, *names: str, **kwargs) -> str | None:
        vendors, infos = self.vgpus(*names, **kwargs)
        return vendors.combination_problem(infos)

    def test_one_vgpu_is_always_fine(self):
        self.assertIsNone(self.problem('GRID P40-6Q'))

    def test_volta_and_later_combine_q_and_c(self):
        self.assertIsNone(self.problem('GRID V100DX-8Q', 'GRID V100DX-8Q'))
        self.assertIsNone(self.problem('NVIDIA A40-48C', 'NVIDIA A40-16C'))
        self.assertIsNone(self.problem('NVIDIA A100-4-20C',
                                       'NVIDIA A100-2-10C'))

    def test_mixed_boards_refused(self):
        found = self.problem('NVIDIA A30-8C', 'NVIDIA A16-8C')
        self.assertIn('one board and one series', found)
        self.assertIn('A16-8C, A30-8C', found)

    def test_mixed_series_refused(self):
        self.assertIn('one board and one series',
                      self.problem('NVIDIA A40-8Q', 'NVIDIA A40-8C'))

    def test_other_series_do_not_combine_on_volta_and_later(self):
        found = self.problem('NVIDIA A40-2B', 'NVIDIA A40-2B')
        self.assertIn('only Q and C series', found)
        self.assertIn('B-series', found)

    def test_pascal_combines_only_full_framebuffer_types(self):
        # Seed 004: two P40-6Q in one VM fail at VM start on real hosts.
        found = self.problem('GRID P40-6Q', 'GRID P40-6Q')
        self.assertIn('only full-framebuffer types combine', found)
        self.assertIn('P40-6Q', found)
        self.assertIsNone(self.problem('GRID P40-24Q', 'GRID P40-24Q'))
        # Maxwell too; the mdev description's max_instance says "full".
        self.assertIsNone(self.problem(
            'GRID M60-8Q', 'GRID M60-8Q', description='max_instance=1'))

    def test_different_vendors_refused(self):
        vendors = base.Vendors([nvidia.NvidiaVendor(),
                                generic.GenericVendor()])
        infos = [vendors.describe_type('nvidia-18', '0x10de',
                                       'GRID M60-8Q', None),
                 vendors.describe_type('mtty-1', None, 'Single port', None)]
        self.assertIn('different vendors',
                      vendors.combination_problem(infos))
