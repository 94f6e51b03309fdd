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
"""Every mapping rule and every problem, on plain data."""

import itertools


from tests import timeout
from vgpu_nova_ext.conf import devices as devices_conf
from vgpu_nova_ext import findings
from vgpu_nova_ext.host import model
from vgpu_nova_ext import mapping

M60 = {'nvidia-18': ('GRID M60-2Q', 4), 'nvidia-22': ('GRID M60-8Q', 1)}


def vtype(type_id, available, table=M60, max_instance=None):
    name = table.get(type_id, (type_id, 0))[0]
    desc = None
    if max_instance is not None:
        desc = 'num_heads=1, framebuffer=10240M, max_instance=%d' % (
            max_instance)
    return model.VGPUType(type_id, name, available, 'vfio-pci', desc)


def gpu(address, available=None, **kwargs):
    """A time-sliced M60 GPU; available: {type: n}, default all free."""
    available = available or {t: n for t, (_, n) in M60.items()}
    name = 'pci_' + address.replace(':', '_').replace('.', '_')
    parent = model.ParentDevice(name, address, tuple(
        vtype(t, n) for t, n in sorted(available.items())))
    return model.PhysicalGPU(name=name, address=address, vendor_id='0x10de',
                             device_id='0x13f2', parents=(parent,), **kwargs)


def sriov_gpu(address, vf_available, type_id='nvidia-471', max_instance=4):
    """An A100-like GPU: one parent per VF, each showing 0 or 1."""
    bus = address[:-4]
    parents = []
    for index, available in enumerate(vf_available):
        vf = '%s%02x.%d' % (bus, (4 + index) // 8, (4 + index) % 8)
        parents.append(model.ParentDevice(
            'pci_' + vf.replace(':', '_').replace('.', '_'), vf,
            (vtype(type_id, available, max_instance=max_instance),
             vtype('nvidia-472', 0, max_instance=2))))
    return model.PhysicalGPU(
        name='pci_' + address.replace(':', '_').replace('.', '_'),
        address=address, vendor_id='0x10de', device_id='0x20f1',
        parents=tuple(parents), sriov_total_vfs=16,
        sriov_num_vfs=len(parents))


_serial = itertools.count(1)


def mdev(parent, type_id, n=1):
    return tuple(model.MediatedDevice(
        '00000000-0000-0000-0000-%012d' % next(_serial), parent, type_id)
        for _ in range(n))


def config(*types, option='enabled_mdev_types', duplicates=()):
    out = []
    for spec in types:
        if isinstance(spec, str):
            spec = {'type_id': spec}
        spec.setdefault('group', 'mdev_' + spec['type_id'])
        spec['device_addresses'] = tuple(spec.get('device_addresses', ()))
        out.append(devices_conf.TypeConfig(**spec))
    return devices_conf.DeviceConfig(types=tuple(out), option=option,
                                     duplicates=tuple(duplicates))


def host(*gpus, devices=()):
    return model.HostSnapshot(gpus=tuple(gpus),
                              mediated_devices=tuple(devices))


class TestAssignment(timeout.TestCase):

    def codes(self, result):
        return sorted(p.code for p in result.problems)

    def by_address(self, result):
        return {a.gpu.address: a for a in result.gpus}

    def test_single_type_is_default_for_all(self):
        result = mapping.assign(config('nvidia-18'),
                                host(gpu('0000:84:00.0'),
                                     gpu('0000:85:00.0')))
        self.assertEqual([], self.codes(result))
        self.assertEqual(['0000:84:00.0', '0000:85:00.0'],
                         [a.gpu.address for a in result.gpus])
        for a in result.gpus:
            self.assertEqual(('nvidia-18', 'GRID M60-2Q', 'VGPU', 4, 0,
                              'default'),
                             (a.type_id, a.type_name, a.resource_class,
                              a.capacity, a.used, a.source))
            self.assertEqual('M60-2Q', a.type_info.short_name)

    def test_listed_and_default(self):
        result = mapping.assign(
            config({'type_id': 'nvidia-22',
                    'device_addresses': ['85:00.0'],
                    'mdev_class': 'CUSTOM_M60_8Q'},
                   'nvidia-18'),
            host(gpu('0000:84:00.0'), gpu('0000:85:00.0'),
                 gpu('0000:86:00.0')))
        self.assertEqual([], self.codes(result))
        got = self.by_address(result)
        self.assertEqual('nvidia-22', got['0000:85:00.0'].type_id)
        self.assertEqual('CUSTOM_M60_8Q', got['0000:85:00.0'].resource_class)
        self.assertEqual(1, got['0000:85:00.0'].capacity)
        self.assertEqual('device_addresses', got['0000:85:00.0'].source)
        self.assertEqual('nvidia-18', got['0000:84:00.0'].type_id)
        self.assertEqual('nvidia-18', got['0000:86:00.0'].type_id)

    def test_address_forms_mean_the_same_gpu(self):
        for written in ('0000:85:00.0', '85:00.0', '0000:85:00.0'.upper(),
                        'pci_0000_85_00_0'):
            result = mapping.assign(
                config({'type_id': 'nvidia-22',
                        'device_addresses': [written]}),
                host(gpu('0000:84:00.0'), gpu('0000:85:00.0')))
            self.assertEqual(['0000:85:00.0'],
                             [a.gpu.address for a in result.gpus], written)

    def test_capacity_counts_existing_devices(self):
        result = mapping.assign(
            config('nvidia-18'),
            host(gpu('0000:84:00.0', {'nvidia-18': 1, 'nvidia-22': 0}),
                 devices=mdev('pci_0000_84_00_0', 'nvidia-18', 3)))
        (a,) = result.gpus
        self.assertEqual((4, 3), (a.capacity, a.used))

    def test_nothing_enabled_warns_on_a_gpu_host(self):
        result = mapping.assign(config(), host(gpu('0000:84:00.0')))
        self.assertEqual(['type.none_enabled'], self.codes(result))
        self.assertEqual((), result.gpus)
        self.assertEqual([], self.codes(mapping.assign(config(), host())))

    def test_duplicate_type_warns(self):
        result = mapping.assign(config('nvidia-18', duplicates=['nvidia-18']),
                                host(gpu('0000:84:00.0')))
        self.assertEqual(['type.duplicate'], self.codes(result))
        self.assertEqual(1, len(result.gpus))


class TestProblems(TestAssignment):

    def test_malformed_address_is_an_error(self):
        result = mapping.assign(
            config({'type_id': 'nvidia-18',
                    'device_addresses': ['zz:00', '84:00.0']}),
            host(gpu('0000:84:00.0')))
        (problem,) = result.problems
        self.assertEqual((findings.ERROR, 'address.malformed',
                          '[mdev_nvidia-18] device_addresses', 'zz:00'),
                         (problem.severity, problem.code, problem.where,
                          problem.value))
        self.assertIn('DDDD:BB:SS.F', problem.why)
        self.assertIn('lspci', problem.fix)
        # The good address still serves.
        self.assertEqual(1, len(result.gpus))

    def test_same_gpu_under_two_types_is_an_error(self):
        result = mapping.assign(
            config({'type_id': 'nvidia-18', 'device_addresses': ['84:00.0']},
                   {'type_id': 'nvidia-22',
                    'device_addresses': ['0000:84:00.0']}),
            host(gpu('0000:84:00.0')))
        (problem,) = result.errors
        self.assertEqual('address.two_types', problem.code)
        self.assertEqual('[mdev_nvidia-22] device_addresses', problem.where)
        self.assertIn('nvidia-18', problem.why)
        # The first claim stands.
        self.assertEqual('nvidia-18', result.gpus[0].type_id)

    def test_listed_gpu_without_the_type_serves_nothing_of_it(self):
        # A fleet's nova.conf: 86:00.0 is another board on another host.
        other = gpu('0000:86:00.0', {'nvidia-11': 16})
        result = mapping.assign(
            config({'type_id': 'nvidia-18', 'device_addresses': ['86:00.0']}),
            host(gpu('0000:84:00.0'), other))
        self.assertEqual((), result.errors)
        (problem,) = result.problems
        self.assertEqual(('warning', 'address.type_unsupported'),
                         (problem.severity, problem.code))
        self.assertIn('it offers: nvidia-11', problem.why)
        self.assertEqual((), result.gpus)

    def test_type_no_gpu_offers_is_served_by_none(self):
        # A fleet's nova.conf names the types of every host's GPUs; this
        # host serves what it has, as Nova does.
        result = mapping.assign(
            config('nvidia-18', {'type_id': 'nvidia-999',
                                 'device_addresses': ['0000:3d:00.0']}),
            host(gpu('0000:84:00.0')))
        self.assertEqual((), result.errors)
        self.assertEqual(['nvidia-18'], [g.type_id for g in result.gpus])
        self.assertEqual(['address.absent', 'type.not_offered'],
                         self.codes(result))
        problem = [p for p in result.problems
                   if p.code == 'type.not_offered'][0]
        self.assertEqual(('warning', 'type.not_offered',
                          '[devices] enabled_mdev_types', 'nvidia-999'),
                         (problem.severity, problem.code, problem.where,
                          problem.value))
        self.assertIn('the host offers: nvidia-18, nvidia-22',
                      problem.why)

    def test_old_option_name_is_named(self):
        result = mapping.assign(
            config('nvidia-999', option='enabled_vgpu_types'),
            host(gpu('0000:84:00.0')))
        self.assertEqual('[devices] enabled_vgpu_types',
                         result.problems[0].where)

    def test_absent_address_is_a_warning(self):
        result = mapping.assign(
            config({'type_id': 'nvidia-18',
                    'device_addresses': ['0000:84:00.0', '0000:99:00.0']}),
            host(gpu('0000:84:00.0')))
        (problem,) = result.problems
        self.assertEqual((findings.WARNING, 'address.absent'),
                         (problem.severity, problem.code))
        self.assertIn('0000:84:00.0', problem.why)
        self.assertEqual(1, len(result.gpus))

    def test_second_default_is_unused_with_a_warning(self):
        result = mapping.assign(config('nvidia-18', 'nvidia-22'),
                                host(gpu('0000:84:00.0')))
        (problem,) = result.problems
        self.assertEqual((findings.WARNING, 'type.second_default',
                          '[mdev_nvidia-22] device_addresses'),
                         (problem.severity, problem.code, problem.where))
        self.assertEqual(['nvidia-18'], [a.type_id for a in result.gpus])

    def test_unlisted_gpu_without_the_default_type_warns(self):
        result = mapping.assign(
            config('nvidia-18'),
            host(gpu('0000:84:00.0'), gpu('0000:86:00.0', {'nvidia-11': 16})))
        self.assertEqual(['gpu.default_unsupported'], self.codes(result))
        self.assertEqual(['0000:84:00.0'],
                         [a.gpu.address for a in result.gpus])

    def test_devices_of_another_type_warn_and_block(self):
        result = mapping.assign(
            config('nvidia-18'),
            host(gpu('0000:84:00.0', {'nvidia-18': 0, 'nvidia-22': 0}),
                 devices=mdev('pci_0000_84_00_0', 'nvidia-22')))
        (problem,) = result.problems
        self.assertEqual((findings.WARNING, 'gpu.foreign_devices',
                          'host GPU 0000:84:00.0'),
                         (problem.severity, problem.code, problem.where))
        self.assertIn('nvidia-22 (1)', problem.why)
        self.assertEqual((0, 0), (result.gpus[0].capacity,
                                  result.gpus[0].used))

    def test_sriov_without_vfs_warns_with_the_command(self):
        idle = model.PhysicalGPU('pci_0000_61_00_0', '0000:61:00.0',
                                 '0x10de', '0x20f1', (), sriov_total_vfs=16)
        result = mapping.assign(config('nvidia-471'),
                                host(sriov_gpu('0000:41:00.0', [1]), idle))
        (problem,) = result.problems
        self.assertEqual('gpu.sriov_disabled', problem.code)
        self.assertIn('sriov-manage -e 0000:61:00.0', problem.fix)

    def test_gpu_without_vgpu_manager_warns(self):
        idle = model.PhysicalGPU('pci_0000_62_00_0', '0000:62:00.0',
                                 '0x10de', '0x1db5', ())
        result = mapping.assign(config('nvidia-18'),
                                host(gpu('0000:84:00.0'), idle))
        self.assertEqual(['gpu.no_mdev'], self.codes(result))

    def test_all_problems_at_once(self):
        result = mapping.assign(
            config({'type_id': 'nvidia-18',
                    'device_addresses': ['zz:00', '0000:99:00.0',
                                         '84:00.0']},
                   {'type_id': 'nvidia-22', 'device_addresses': ['84:00.0']},
                   'nvidia-999', 'nvidia-11'),
            host(gpu('0000:84:00.0')))
        self.assertEqual(['address.absent', 'address.malformed',
                          'address.two_types', 'type.not_offered',
                          'type.not_offered', 'type.second_default'],
                         self.codes(result))
        for problem in result.problems:
            self.assertTrue(problem.fix)
            self.assertIn(problem.value, str(problem))


class TestSRIOV(TestAssignment):

    def test_vfs_are_one_unit_capped_by_max_instance(self):
        # 16 free VFs each show 1, but the GPU holds 4 A100-10C.
        result = mapping.assign(config('nvidia-471'),
                                host(sriov_gpu('0000:41:00.0', [1] * 16)))
        (a,) = result.gpus
        self.assertEqual('pci_0000_41_00_0', a.gpu.name)
        self.assertEqual(16, len(a.parents))
        self.assertEqual((4, 0), (a.capacity, a.used))

    def test_existing_devices_count(self):
        gpu41 = sriov_gpu('0000:41:00.0', [0, 0, 1, 1, 1])
        result = mapping.assign(
            config('nvidia-471'),
            host(gpu41, devices=mdev(gpu41.parents[0].name, 'nvidia-471') +
                 mdev(gpu41.parents[1].name, 'nvidia-471')))
        (a,) = result.gpus
        self.assertEqual((4, 2), (a.capacity, a.used))

    def test_full_gpu(self):
        gpu41 = sriov_gpu('0000:41:00.0', [0] * 8)
        devices = sum((mdev(p.name, 'nvidia-471') for p in gpu41.parents[:4]),
                      ())
        (a,) = mapping.assign(config('nvidia-471'),
                              host(gpu41, devices=devices)).gpus
        self.assertEqual((4, 4), (a.capacity, a.used))

    def test_single_vf_listed(self):
        gpu41 = sriov_gpu('0000:41:00.0', [1] * 16)
        vf = gpu41.parents[2].address
        result = mapping.assign(
            config({'type_id': 'nvidia-471', 'device_addresses': [vf]}),
            host(gpu41))
        (a,) = result.gpus
        self.assertEqual((gpu41.parents[2].name,), a.parents)
        self.assertEqual(1, a.capacity)

    def test_vfs_of_one_gpu_under_two_types_is_an_error(self):
        gpu41 = sriov_gpu('0000:41:00.0', [1] * 4)
        result = mapping.assign(
            config({'type_id': 'nvidia-471',
                    'device_addresses': [gpu41.parents[0].address]},
                   {'type_id': 'nvidia-472',
                    'device_addresses': [gpu41.parents[1].address]}),
            host(gpu41))
        self.assertEqual(['address.two_types'], self.codes(result))


class TestMaxInstances(TestAssignment):

    def test_spread_in_address_order(self):
        result = mapping.assign(
            config({'type_id': 'nvidia-18', 'max_instances': 6}),
            host(gpu('0000:85:00.0'), gpu('0000:84:00.0'),
                 gpu('0000:86:00.0')))
        got = self.by_address(result)
        self.assertEqual([4, 2, 0], [got[a].capacity for a in (
            '0000:84:00.0', '0000:85:00.0', '0000:86:00.0')])
        (note,) = result.notes
        self.assertIn('max_instances = 6', note)
        self.assertIn('0000:84:00.0=4, 0000:85:00.0=2, 0000:86:00.0=0', note)

    def test_never_below_existing_devices(self):
        result = mapping.assign(
            config({'type_id': 'nvidia-18', 'max_instances': 2}),
            host(gpu('0000:84:00.0'),
                 gpu('0000:85:00.0', {'nvidia-18': 1, 'nvidia-22': 0}),
                 devices=mdev('pci_0000_85_00_0', 'nvidia-18', 3)))
        got = self.by_address(result)
        self.assertEqual(0, got['0000:84:00.0'].capacity)
        self.assertEqual(3, got['0000:85:00.0'].capacity)
        self.assertEqual(['type.max_instances_exceeded'], self.codes(result))


class TestVirtualParents(TestAssignment):

    def test_mtty_by_libvirt_name(self):
        mtty = model.PhysicalGPU(
            'mtty_mtty', 'mtty_mtty', None, None,
            (model.ParentDevice('mtty_mtty', 'mtty_mtty', (
                model.VGPUType('mtty-1', 'Single port serial', 24,
                               'vfio-pci'),)),), virtual=True)
        result = mapping.assign(
            config({'type_id': 'mtty-1', 'device_addresses': ['mtty_mtty']}),
            host(mtty))
        (a,) = result.gpus
        self.assertEqual(('mtty_mtty', 24), (a.gpu.name, a.capacity))
        self.assertEqual('Single port serial', a.type_info.short_name)

    def test_unknown_virtual_name_is_absent(self):
        result = mapping.assign(
            config({'type_id': 'nvidia-18', 'device_addresses': ['mtty_x']}),
            host(gpu('0000:84:00.0')))
        self.assertEqual(['address.absent'], self.codes(result))


class TestNotes(TestAssignment):

    def test_old_names_are_noted_not_warned(self):
        result = mapping.assign(
            config({'type_id': 'nvidia-18', 'group': 'vgpu_nvidia-18'},
                   option='enabled_vgpu_types'),
            host(gpu('0000:84:00.0')))
        self.assertEqual([], self.codes(result))
        (note,) = result.notes
        self.assertIn('[devices] enabled_vgpu_types', note)
        self.assertIn('[vgpu_nvidia-18]', note)


class TestVendorRules(timeout.TestCase):

    def test_max_unit_contradicting_the_vendor_rule_is_a_warning(self):
        # Two M60-2Q in one VM: NVIDIA refuses (Maxwell and Pascal combine
        # only full-framebuffer types). Said once per type, not per GPU.
        plan = mapping.assign(
            config({'type_id': 'nvidia-18', 'max_unit': 2}),
            host(gpu('0000:84:00.0'), gpu('0000:85:00.0')))
        rules = [p for p in plan.problems if p.code == 'type.max_unit_rule']
        self.assertEqual(1, len(rules))
        self.assertIn('full-framebuffer', rules[0].why)
        self.assertIn('max_unit = 1', rules[0].fix)
        # Within the rule: no warning.
        plan = mapping.assign(config('nvidia-18'), host(gpu('0000:84:00.0')))
        self.assertNotIn('type.max_unit_rule',
                         [p.code for p in plan.problems])
