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
"""The sysfs reader against trees with the kernel's layout.

``RawKernelTree`` lays files out by hand, link by link as a real host has
them (the V100 host of the field notes: GPUs behind PCIe switches, an mdev
below its GPU), independently of the tree writer the simulated backend
uses; the other tests use that writer.
"""

import logging
import os

from tests.unit import base
from vgpu_nova_ext import exception
from vgpu_nova_ext.host import sysfs
from vgpu_nova_ext.host import sysfs_backend

UUID = 'd878445d-df99-4510-b467-c67a4c1a7c34'
GPU5 = 'devices/pci0000:85/0000:85:00.0/0000:86:00.0/0000:87:08.0/0000:89:00.0'


class RawKernelTree:

    def __init__(self, root):
        self.sys = os.path.join(root, 'sys')

    def file(self, rel, content):
        path = os.path.join(self.sys, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            f.write(content)

    def link(self, rel, target):
        path = os.path.join(self.sys, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(target, path)


def v100_host(root):
    """/sys of the field notes' host: GPU 5 holds one V100DX-8Q vGPU."""
    t = RawKernelTree(root)
    t.file(GPU5 + '/vendor', '0x10de\n')
    t.file(GPU5 + '/device', '0x1db5\n')
    t.file(GPU5 + '/class', '0x030200\n')
    types = {'nvidia-194': ('GRID V100DX-1Q', 0),
             'nvidia-197': ('GRID V100DX-8Q', 3)}
    for type_id, (name, available) in types.items():
        tdir = GPU5 + '/mdev_supported_types/' + type_id
        t.file(tdir + '/name', name + '\n')
        t.file(tdir + '/available_instances', '%d\n' % available)
        t.file(tdir + '/device_api', 'vfio-pci\n')
        t.file(tdir + '/description',
               'num_heads=4, frl_config=60, framebuffer=8192M, '
               'max_resolution=7680x4320, max_instance=4\n')
        t.file(tdir + '/create', '')
        os.makedirs(os.path.join(t.sys, tdir, 'devices'))
    t.link('class/mdev_bus/0000:89:00.0',
           '../../devices/pci0000:85/0000:85:00.0/0000:86:00.0/'
           '0000:87:08.0/0000:89:00.0')
    t.link('bus/pci/devices/0000:89:00.0',
           '../../../devices/pci0000:85/0000:85:00.0/0000:86:00.0/'
           '0000:87:08.0/0000:89:00.0')
    # The mdev: a directory below its parent, as `ls -l /sys/bus/mdev/
    # devices/` shows in the field notes.
    t.file(GPU5 + '/' + UUID + '/remove', '')
    t.link(GPU5 + '/' + UUID + '/mdev_type',
           '../mdev_supported_types/nvidia-197')
    t.link(GPU5 + '/mdev_supported_types/nvidia-197/devices/' + UUID,
           '../../../' + UUID)
    t.link('bus/mdev/devices/' + UUID,
           '../../../devices/pci0000:85/0000:85:00.0/0000:86:00.0/'
           '0000:87:08.0/0000:89:00.0/' + UUID)
    return t


class TestRawKernelLayout(base.TestCase):

    def test_legacy_gpu_with_an_mdev(self):
        v100_host(self.root)
        snap = self.scan()
        self.assertEqual(1, len(snap.gpus))
        gpu = snap.gpus[0]
        self.assertEqual('pci_0000_89_00_0', gpu.name)
        self.assertEqual('0000:89:00.0', gpu.address)
        self.assertEqual('0x10de', gpu.vendor_id)
        self.assertEqual('0x1db5', gpu.device_id)
        self.assertFalse(gpu.sriov)
        self.assertEqual(('nvidia-194', 'nvidia-197'),
                         gpu.supported_type_ids)
        vgpu_type = gpu.parents[0].type('nvidia-197')
        self.assertEqual('GRID V100DX-8Q', vgpu_type.name)
        self.assertEqual(3, vgpu_type.available_instances)
        self.assertEqual('vfio-pci', vgpu_type.device_api)
        self.assertIn('max_instance=4', vgpu_type.description)
        self.assertEqual(1, len(snap.mediated_devices))
        mdev = snap.mediated_devices[0]
        self.assertEqual(UUID, mdev.uuid)
        self.assertEqual('pci_0000_89_00_0', mdev.parent)
        self.assertEqual('nvidia-197', mdev.type_id)

    def test_absolute_links_stay_inside_the_root(self):
        t = v100_host(self.root)
        os.unlink(os.path.join(t.sys, 'class/mdev_bus/0000:89:00.0'))
        t.link('class/mdev_bus/0000:89:00.0', '/sys/' + GPU5)
        self.assertEqual('pci_0000_89_00_0', self.scan().gpus[0].name)

    def test_optional_files_may_be_missing(self):
        t = v100_host(self.root)
        tdir = os.path.join(t.sys, GPU5, 'mdev_supported_types',
                            'nvidia-194')
        os.unlink(os.path.join(tdir, 'name'))
        os.unlink(os.path.join(tdir, 'description'))
        vgpu_type = self.scan().gpus[0].parents[0].type('nvidia-194')
        self.assertIsNone(vgpu_type.name)
        self.assertIsNone(vgpu_type.description)

    def test_mdev_removed_while_listed_is_not_on_the_host(self):
        t = v100_host(self.root)
        # What a scan finds when the device goes between the listing of
        # /sys/bus/mdev/devices and the read of its type.
        os.unlink(os.path.join(t.sys, GPU5, UUID, 'mdev_type'))
        self.assertEqual((), self.scan().mediated_devices)
        self.assertEqual(1, len(self.scan().gpus))

    def test_broken_mdev_entries_are_named(self):
        """Each left out of the host with a warning naming it.

        A link that leads nowhere, an mdev without mdev_type, an mdev_type
        that loops: the kernel makes none of them, so each says the tree
        (or the kernel) is wrong instead of vanishing in silence.
        """
        breaks = {
            'its link leads nowhere': lambda t: os.rename(
                os.path.join(t.sys, GPU5, UUID),
                os.path.join(t.sys, GPU5, 'moved')),
            'it has no mdev_type': lambda t: os.unlink(
                os.path.join(t.sys, GPU5, UUID, 'mdev_type')),
            'its mdev_type does not lead to a type directory': lambda t: (
                os.unlink(os.path.join(t.sys, GPU5, UUID, 'mdev_type')),
                os.symlink('mdev_type', os.path.join(t.sys, GPU5, UUID,
                                                     'mdev_type'))),
        }
        for said, breaking in breaks.items():
            root = self.useFixture(base.fixtures.TempDir()).path
            t = v100_host(root)
            breaking(t)
            logged = self.useFixture(base.fixtures.FakeLogger(
                name='vgpu_nova_ext.host.sysfs', level=logging.WARNING))
            snap = sysfs_backend.SysfsBackend(sysfs_root=root).scan()
            self.assertEqual((), snap.mediated_devices, said)
            self.assertIn(UUID, logged.output, said)
            self.assertIn(said, logged.output)

    def test_mdev_link_leaving_sys_is_refused(self):
        t = v100_host(self.root)
        os.unlink(os.path.join(t.sys, 'bus/mdev/devices', UUID))
        t.link('bus/mdev/devices/' + UUID, '../../../../../etc/' + UUID)
        exc = self.assertRaises(exception.HostReadError, self.scan)
        self.assertIn('outside /sys', str(exc))
        self.assertNotIn(self.root, str(exc))

    def test_type_names_read_again_after_a_driver_reload(self):
        t = v100_host(self.root)
        reader = sysfs.SysfsReader(self.root)
        tdir = os.path.join(t.sys, GPU5, 'mdev_supported_types',
                            'nvidia-197')
        self.assertEqual('GRID V100DX-8Q', reader.scan().gpus[0].parents[
            0].type('nvidia-197').name)
        # A reload of the vendor driver makes the type directories anew
        # (the old one kept aside, so that its inode is not reused).
        os.rename(tdir, os.path.join(self.root, 'unloaded'))
        os.makedirs(tdir)
        for name, content in (('name', 'GRID V100DX-8C'),
                              ('available_instances', '2'),
                              ('device_api', 'vfio-pci')):
            with open(os.path.join(tdir, name), 'w') as f:
                f.write(content + '\n')
        vgpu_type = reader.scan().gpus[0].parents[0].type('nvidia-197')
        self.assertEqual(('GRID V100DX-8C', 2, None),
                         (vgpu_type.name, vgpu_type.available_instances,
                          vgpu_type.description))

    def test_empty_root_is_an_empty_host(self):
        snap = self.scan()
        self.assertEqual((), snap.gpus)
        self.assertEqual((), snap.mediated_devices)


class TestMalformedEntries(base.TestCase):

    def _type_file(self, t, name):
        return os.path.join(t.sys, GPU5, 'mdev_supported_types',
                            'nvidia-197', name)

    def test_available_instances_not_a_number(self):
        t = v100_host(self.root)
        with open(self._type_file(t, 'available_instances'), 'w') as f:
            f.write('lots\n')
        exc = self.assertRaises(exception.HostReadError, self.scan)
        self.assertIn('/sys/' + GPU5 + '/mdev_supported_types/nvidia-197/'
                      'available_instances', str(exc))
        self.assertIn("'lots'", str(exc))
        self.assertNotIn(self.root, str(exc))

    def test_negative_available_instances(self):
        t = v100_host(self.root)
        with open(self._type_file(t, 'available_instances'), 'w') as f:
            f.write('-1\n')
        self.assertRaises(exception.HostReadError, self.scan)

    def test_missing_device_api(self):
        t = v100_host(self.root)
        os.unlink(self._type_file(t, 'device_api'))
        exc = self.assertRaises(exception.HostReadError, self.scan)
        self.assertIn('device_api is missing', str(exc))

    def test_dangling_mdev_bus_link(self):
        t = RawKernelTree(self.root)
        t.link('class/mdev_bus/0000:84:00.0',
               '../../devices/pci0000:80/0000:84:00.0')
        exc = self.assertRaises(exception.HostReadError, self.scan)
        self.assertIn('went away', str(exc))

    def test_mdev_not_named_by_uuid(self):
        t = v100_host(self.root)
        t.link('bus/mdev/devices/not-a-uuid', '../../../' + GPU5 + '/' + UUID)
        exc = self.assertRaises(exception.HostReadError, self.scan)
        self.assertIn('not-a-uuid', str(exc))

    def test_bad_vendor_id(self):
        t = v100_host(self.root)
        with open(os.path.join(t.sys, GPU5, 'vendor'), 'w') as f:
            f.write('nvidia\n')
        exc = self.assertRaises(exception.HostReadError, self.scan)
        self.assertIn('vendor', str(exc))

    def test_parent_neither_pci_nor_virtual(self):
        t = RawKernelTree(self.root)
        t.file('devices/platform/foo/mdev_supported_types/x-1/'
               'available_instances', '1\n')
        t.link('class/mdev_bus/foo', '../../devices/platform/foo')
        exc = self.assertRaises(exception.HostReadError, self.scan)
        self.assertIn('does not know how to name it', str(exc))


class TestTreeWriterLayouts(base.TestCase):

    def test_sriov_vfs_are_one_gpu(self):
        vfs = ['0000:41:00.4', '0000:41:00.5', '0000:41:00.6']
        vf_dirs = self.add_sriov_gpu(
            '0000:41:00.0', vfs,
            [[base.nvidia_type('nvidia-471', 'GRID A100-10C', 1, 4)]] * 3)
        self.tree.add_mdev(vf_dirs[1], UUID, 'nvidia-471')
        # The VF's physfn link is relative, to its sibling PF.
        self.assertEqual('../0000:41:00.0',
                         os.readlink(os.path.join(vf_dirs[0], 'physfn')))
        snap = self.scan()
        self.assertEqual(1, len(snap.gpus))
        gpu = snap.gpus[0]
        self.assertEqual('pci_0000_41_00_0', gpu.name)
        self.assertTrue(gpu.sriov)
        self.assertEqual(3, gpu.sriov_num_vfs)
        self.assertEqual(['pci_0000_41_00_4', 'pci_0000_41_00_5',
                          'pci_0000_41_00_6'], [p.name for p in gpu.parents])
        self.assertEqual('pci_0000_41_00_5', snap.mediated_devices[0].parent)
        self.assertIs(gpu, snap.gpu_of_parent('pci_0000_41_00_5'))

    def test_mtty_virtual_parent(self):
        dev = self.tree.add_virtual_device('mtty/mtty')
        self.tree.make_mdev_parent(dev, 'mtty', [
            base.model.VGPUType('mtty-1', 'Single port serial', 24,
                                'vfio-pci'),
            base.model.VGPUType('mtty-2', 'Dual port serial', 12,
                                'vfio-pci')])
        self.tree.add_mdev(dev, UUID, 'mtty-2')
        self.assertEqual('../../devices/virtual/mtty/mtty', os.readlink(
            os.path.join(self.root, 'sys/class/mdev_bus/mtty')))
        snap = self.scan()
        gpu = snap.gpus[0]
        self.assertEqual(('mtty_mtty', 'mtty_mtty', True),
                         (gpu.name, gpu.address, gpu.virtual))
        self.assertEqual('mtty_mtty', snap.mediated_devices[0].parent)
        self.assertEqual('mtty-2', snap.mediated_devices[0].type_id)

    def test_sriov_gpu_without_vfs_is_seen(self):
        self.tree.add_pci_device('0000:61:00.0', device_id='0x20f1')
        self.tree.add_sriov_capability('0000:61:00.0', 16)
        # A NIC is not a GPU and is not reported.
        self.tree.add_pci_device('0000:03:00.0', vendor_id='0x8086',
                                 pci_class='0x020000', driver='ixgbe')
        gpus = self.scan().gpus
        self.assertEqual(['pci_0000_61_00_0'], [g.name for g in gpus])
        self.assertEqual((), gpus[0].parents)
        self.assertEqual((16, 0), (gpus[0].sriov_total_vfs,
                                   gpus[0].sriov_num_vfs))

    def test_backend_plugin(self):
        self.add_gpu('0000:84:00.0',
                     [base.nvidia_type('nvidia-18', 'GRID M60-2Q', 4)])
        backend = sysfs_backend.SysfsBackend(sysfs_root=self.root)
        self.assertIn(self.root, backend.describe())
        self.assertEqual('pci_0000_84_00_0', backend.scan().gpus[0].name)
