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
"""Test helpers: temporary sysfs trees and configuration files."""

import os
import stat
import textwrap

import fixtures

from tests import configs
from tests import timeout
from vgpu_nova_ext.conf import devices as devices_conf
from vgpu_nova_ext.host import model
from vgpu_nova_ext.host.simulated import tree
from vgpu_nova_ext.host import sysfs


def nvidia_type(type_id: str, name: str, available: int,
                max_instance: int | None = None,
                framebuffer_mb: int = 2048) -> model.VGPUType:
    description = None
    if max_instance is not None:
        description = ('num_heads=4, frl_config=60, framebuffer=%dM, '
                       'max_resolution=5120x2880, max_instance=%d' % (
                           framebuffer_mb, max_instance))
    return model.VGPUType(id=type_id, name=name,
                          available_instances=available,
                          device_api='vfio-pci', description=description)


def tree_state(root: str) -> dict:
    """Every path below ``root``: kind, mode, owner, time, what it holds.

    Two calls compare equal only if nothing below ``root`` was written.
    """
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                held = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                with open(path, 'rb') as f:
                    held = f.read()
            else:
                held = None
            found[os.path.relpath(path, root)] = (
                stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode),
                info.st_uid, info.st_mtime_ns, held)
    return found


class TestCase(timeout.TestCase):

    def setUp(self):
        super().setUp()
        self.root = self.useFixture(fixtures.TempDir()).path
        self.tree = tree.SysfsTree(self.root)

    def scan(self) -> model.HostSnapshot:
        return sysfs.SysfsReader(self.root).scan()

    def write_config(self, text: str) -> str:
        path = os.path.join(self.root, 'nova-%d.conf' % len(
            os.listdir(self.root)))
        with open(path, 'w') as f:
            f.write(textwrap.dedent(text))
        return path

    def device_config(self, text: str) -> devices_conf.DeviceConfig:
        return configs.device_config([self.write_config(text)])

    # -- common host shapes ----------------------------------------------
    def add_gpu(self, address: str, types: list[model.VGPUType],
                device_id: str = '0x13f2') -> str:
        dev = self.tree.add_pci_device(address, device_id=device_id)
        self.tree.make_mdev_parent(dev, address, types)
        return dev

    def add_sriov_gpu(self, address: str, vfs: list[str],
                      types_per_vf: list[list[model.VGPUType]]) -> list[str]:
        self.tree.add_pci_device(address, device_id='0x20f1')
        vf_dirs = self.tree.add_virtual_functions(address, vfs)
        for vf, vf_dir, types in zip(vfs, vf_dirs, types_per_vf):
            self.tree.make_mdev_parent(vf_dir, vf, types)
        return vf_dirs
