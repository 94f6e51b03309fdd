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
import uuid

import os_traits

from tests import timeout
from tests.unit import test_mapping as tm
from vgpu_nova_ext import inventory
from vgpu_nova_ext import mapping


class TestProviderTree(timeout.TestCase):

    def _tree(self, snapshot, *types):
        return inventory.provider_tree(
            'cn1', mapping.assign(tm.config(*types), snapshot)).providers

    def test_named_as_nova_names_them(self):
        (provider,) = self._tree(tm.host(tm.gpu('0000:84:00.0')),
                                 'nvidia-18')
        self.assertEqual('cn1_pci_0000_84_00_0', provider.name)
        self.assertEqual('cn1', provider.parent)
        self.assertEqual('0000:84:00.0', provider.device_address)
        self.assertEqual(('VGPU', 4), (provider.resource_class,
                                       provider.total))
        self.assertEqual(
            inventory.InventorySpec('VGPU', 4, reserved=0, min_unit=1,
                                    max_unit=1, step_size=1,
                                    allocation_ratio=1.0),
            provider.inventory)

    def test_uuid_is_stable_uuid5_of_the_name(self):
        (one,) = self._tree(tm.host(tm.gpu('0000:84:00.0')), 'nvidia-18')
        (two,) = self._tree(tm.host(tm.gpu('0000:84:00.0')), 'nvidia-22')
        self.assertEqual(one.uuid, two.uuid)
        self.assertEqual(5, uuid.UUID(one.uuid).version)
        self.assertEqual(str(uuid.uuid5(inventory.PROVIDER_NAMESPACE,
                                        'cn1_pci_0000_84_00_0')), one.uuid)
        self.assertNotEqual(one.uuid, inventory.provider_uuid(
            'cn2_pci_0000_84_00_0'))

    def test_traits(self):
        (provider,) = self._tree(tm.host(tm.gpu('0000:84:00.0')),
                                 'nvidia-18')
        self.assertEqual((os_traits.OWNER_NOVA, 'CUSTOM_VGPU_M60_2Q',
                          'CUSTOM_VGPU_NVIDIA_18'), provider.traits)

    def test_zero_capacity_has_no_provider(self):
        full = tm.gpu('0000:84:00.0', {'nvidia-18': 0, 'nvidia-22': 0})
        self.assertEqual((), self._tree(tm.host(full), 'nvidia-18'))

    def test_used_keeps_the_provider(self):
        full = tm.gpu('0000:84:00.0', {'nvidia-18': 0, 'nvidia-22': 0})
        (provider,) = self._tree(
            tm.host(full, devices=tm.mdev('pci_0000_84_00_0', 'nvidia-18',
                                          4)), 'nvidia-18')
        self.assertEqual((4, 4), (provider.total, provider.used))


class TestPlacementState(timeout.TestCase):

    def _tree(self, snapshot, *types, **kwargs):
        return inventory.provider_tree(
            'cn1', mapping.assign(tm.config(*types), snapshot), **kwargs)

    def test_existing_provider_keeps_its_uuid(self):
        nova_made = str(uuid.uuid4())
        tree = self._tree(tm.host(tm.gpu('0000:84:00.0'),
                                  tm.gpu('0000:85:00.0')), 'nvidia-18',
                          existing_uuids={'cn1_pci_0000_84_00_0': nova_made})
        by_name = tree.by_name()
        self.assertEqual(nova_made, by_name['cn1_pci_0000_84_00_0'].uuid)
        self.assertEqual(inventory.provider_uuid('cn1_pci_0000_85_00_0'),
                         by_name['cn1_pci_0000_85_00_0'].uuid)

    def test_total_never_below_allocations(self):
        full = tm.gpu('0000:84:00.0', {'nvidia-18': 1, 'nvidia-22': 0})
        tree = self._tree(tm.host(full), 'nvidia-18',
                          allocated={'cn1_pci_0000_84_00_0': 3})
        (provider,) = tree.providers
        self.assertEqual((3, 3), (provider.total, provider.used))
        (problem,) = tree.problems
        self.assertIn('3 VGPU allocated', problem)
        self.assertIn('room for 1', problem)

    def test_zero_capacity_with_allocations_keeps_total_used(self):
        full = tm.gpu('0000:84:00.0', {'nvidia-18': 0, 'nvidia-22': 0})
        tree = self._tree(tm.host(full), 'nvidia-18',
                          allocated={'cn1_pci_0000_84_00_0': 2})
        (provider,) = tree.providers
        self.assertEqual(2, provider.total)

    def test_max_unit_and_reserved_from_config(self):
        tree = self._tree(tm.host(tm.gpu('0000:84:00.0')),
                          {'type_id': 'nvidia-18', 'max_unit': 2,
                           'reserved': 1})
        (provider,) = tree.providers
        self.assertEqual((4, 1, 2), (provider.total,
                                     provider.inventory.reserved,
                                     provider.inventory.max_unit))

    def test_max_unit_and_reserved_never_above_total(self):
        tree = self._tree(tm.host(tm.gpu('0000:84:00.0')),
                          {'type_id': 'nvidia-22', 'max_unit': 4,
                           'reserved': 3})
        (provider,) = tree.providers
        self.assertEqual((1, 1, 1), (provider.total,
                                     provider.inventory.reserved,
                                     provider.inventory.max_unit))


class TestShrinking(timeout.TestCase):

    def test_only_providers_that_go_down(self):
        tree = inventory.provider_tree('cn1', mapping.assign(
            tm.config('nvidia-18'), tm.host(tm.gpu('0000:84:00.0'),
                                            tm.gpu('0000:85:00.0'))))
        current = {'cn1_pci_0000_84_00_0': {'VGPU': 4},
                   'cn1_pci_0000_85_00_0': {'VGPU': 8},
                   'cn1_pci_0000_86_00_0': {'VGPU': 2},
                   'cn1': {'VGPU': 16},
                   'cn2_pci_0000_84_00_0': {'VGPU': 9}}
        self.assertEqual([('cn1_pci_0000_85_00_0', 'VGPU'),
                          ('cn1_pci_0000_86_00_0', 'VGPU')],
                         inventory.shrinking(tree, current))
        # The usage is read for those only, and floors their totals.
        asked = []

        def usage(name, rc):
            asked.append(name)
            return 6 if name.endswith('85_00_0') else 0
        floors = inventory.usage_floors(tree, current, usage)
        self.assertEqual({'cn1_pci_0000_85_00_0': 6,
                          'cn1_pci_0000_86_00_0': 0}, floors)
        self.assertEqual(['cn1_pci_0000_85_00_0', 'cn1_pci_0000_86_00_0'],
                         asked)
        floored = inventory.provider_tree(
            'cn1', mapping.assign(tm.config('nvidia-18'), tm.host(
                tm.gpu('0000:84:00.0'), tm.gpu('0000:85:00.0'))),
            allocated=floors).by_name()
        self.assertEqual(6, floored['cn1_pci_0000_85_00_0'].total)
