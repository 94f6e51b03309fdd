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
"""Write a directory tree laid out exactly as the kernel lays out sysfs.

The simulated host backend and the tests build hosts with this, and the
sysfs reader reads them back: the read side has one code path whatever the
host. The layout follows the kernel's:

- devices live under ``sys/devices`` (PCI devices below their root port
  and bridges, virtual ones under ``sys/devices/virtual``);
- ``sys/bus/pci/devices/<addr>``, ``sys/class/mdev_bus/<name>`` and
  ``sys/bus/mdev/devices/<uuid>`` are *relative* symbolic links into
  ``sys/devices``;
- an mdev parent has ``mdev_supported_types/<type>/{name,
  available_instances, device_api, description, create, devices/}``;
- an mdev is a directory below its parent, with a relative ``mdev_type``
  link to its type and a ``remove`` file;
- a virtual function is a sibling of its physical function, linked to it
  by ``physfn`` (and from it by ``virtfnN``).
"""

import json
import os

from vgpu_nova_ext.host import address
from vgpu_nova_ext.host import model
from vgpu_nova_ext.host.simulated import capacity
from vgpu_nova_ext.host.simulated import mig_state
from vgpu_nova_ext.host.simulated import specs
from vgpu_nova_ext.host import vfio


#: A file in an mdev's directory (a VF's ``nvidia/``) that the simulated
#: kernel takes as "a guest uses this device": removing it fails with
#: EBUSY, as it would.
IN_USE_MARK = '.in_use'


def read_json(root: str, name: str) -> dict:
    """A simulated driver's state file under ``root``; {} until written."""
    try:
        with open(os.path.join(root, name)) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def write_json(root: str, name: str, content: dict) -> None:
    """Replace a simulated driver's state file (one atomic rename)."""
    os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
    replace_file(os.path.join(root, name), json.dumps(content), 0o644)


def replace_file(path: str, content: str, mode: int = 0o444) -> None:
    """Write an attribute of the simulated tree.

    Written aside and renamed over: a reader in another process sees the
    old value or the new one, never no file (the kernel's attributes are
    always there); and read-only files can be replaced by a non-root test
    run.
    """
    tmp = '%s.%d.tmp' % (path, os.getpid())
    with open(tmp, 'w') as f:
        f.write(content)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


class SysfsTree:
    """Builds a kernel-style sysfs tree below ``root``."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.sys = os.path.join(root, 'sys')

    # -- helpers ---------------------------------------------------------
    def _path(self, *parts: str) -> str:
        return os.path.join(self.sys, *parts)

    _write = staticmethod(replace_file)

    @staticmethod
    def _link(link: str, target: str) -> None:
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(os.path.relpath(target, os.path.dirname(link)), link)

    def device_dir(self, name: str) -> str:
        """The real directory of a PCI address or an mdev_bus name."""
        for candidate in (self._path('bus', 'pci', 'devices', name),
                          self._path('class', 'mdev_bus', name)):
            if os.path.lexists(candidate):
                return os.path.realpath(candidate)
        raise KeyError(name)

    # -- devices ---------------------------------------------------------
    def add_pci_device(self, address: str, vendor_id: str = '0x10de',
                       device_id: str = '0x0000',
                       pci_class: str = '0x030200',
                       path: str | None = None,
                       driver: str | None = 'nvidia') -> str:
        """Add a PCI function; ``path`` is its place below sys/devices."""
        if path is None:
            domain, bus = address.split(':')[:2]
            path = 'pci%s:%s/%s:%s:00.0/%s' % (domain, bus, domain, bus,
                                               address)
        dev = self._path('devices', path)
        os.makedirs(dev, exist_ok=True)
        self._write(os.path.join(dev, 'vendor'), vendor_id + '\n')
        self._write(os.path.join(dev, 'device'), device_id + '\n')
        self._write(os.path.join(dev, 'class'), pci_class + '\n')
        self._link(os.path.join(dev, 'subsystem'), self._path('bus', 'pci'))
        if driver:
            drv = self._path('bus', 'pci', 'drivers', driver)
            os.makedirs(drv, exist_ok=True)
            self._link(os.path.join(dev, 'driver'), drv)
            self._link(os.path.join(drv, address), dev)
        self._link(self._path('bus', 'pci', 'devices', address), dev)
        return dev

    def add_virtual_functions(self, pf_address: str, vf_addresses: list[str],
                              total_vfs: int | None = None) -> list[str]:
        """Add VFs beside their PF, linked as the kernel links them."""
        pf = self.device_dir(pf_address)
        with open(os.path.join(pf, 'vendor')) as f:
            vendor_id = f.read().strip()
        vf_dirs = []
        for index, vf_address in enumerate(vf_addresses):
            path = os.path.relpath(
                os.path.join(os.path.dirname(pf), vf_address),
                self._path('devices'))
            vf = self.add_pci_device(vf_address, vendor_id=vendor_id,
                                     path=path)
            self._link(os.path.join(vf, 'physfn'), pf)
            self._link(os.path.join(pf, 'virtfn%d' % index), vf)
            vf_dirs.append(vf)
        total = total_vfs if total_vfs is not None else len(vf_addresses)
        self._write(os.path.join(pf, 'sriov_totalvfs'), '%d\n' % total)
        self._write(os.path.join(pf, 'sriov_numvfs'),
                    '%d\n' % len(vf_addresses), 0o644)
        return vf_dirs

    def add_sriov_capability(self, pf_address: str, total_vfs: int) -> None:
        """An SR-IOV capable PF whose VFs are not enabled (numvfs 0)."""
        pf = self.device_dir(pf_address)
        self._write(os.path.join(pf, 'sriov_totalvfs'), '%d\n' % total_vfs)
        self._write(os.path.join(pf, 'sriov_numvfs'), '0\n', 0o644)

    def add_virtual_device(self, path_below_virtual: str) -> str:
        dev = self._path('devices', 'virtual', path_below_virtual)
        os.makedirs(dev, exist_ok=True)
        return dev

    def make_mdev_parent(self, device: str, class_name: str,
                         types: list[model.VGPUType]) -> None:
        """Give ``device`` (a directory) mdev_supported_types."""
        for vgpu_type in types:
            self.write_type(device, vgpu_type)
        self._link(self._path('class', 'mdev_bus', class_name), device)

    def write_type(self, device: str, vgpu_type: model.VGPUType) -> None:
        tdir = os.path.join(device, 'mdev_supported_types', vgpu_type.id)
        os.makedirs(os.path.join(tdir, 'devices'), exist_ok=True)
        if vgpu_type.name is not None:
            self._write(os.path.join(tdir, 'name'), vgpu_type.name + '\n')
        self._write(os.path.join(tdir, 'available_instances'),
                    '%d\n' % vgpu_type.available_instances)
        self._write(os.path.join(tdir, 'device_api'),
                    vgpu_type.device_api + '\n')
        if vgpu_type.description is not None:
            self._write(os.path.join(tdir, 'description'),
                        vgpu_type.description + '\n')
        self._write(os.path.join(tdir, 'create'), '', 0o200)

    def make_vfio_vf(self, vf_dir: str, creatable: list[tuple[int, str]],
                     current: int = 0) -> None:
        """Give a VF NVIDIA's vendor VFIO files (no mdev bus)."""
        nvidia = os.path.join(vf_dir, vfio.NVIDIA_DIR)
        os.makedirs(nvidia, exist_ok=True)
        self._write(os.path.join(nvidia, vfio.CREATABLE),
                    vfio.format_creatable(creatable))
        self._write(os.path.join(nvidia, vfio.CURRENT), '%d\n' % current,
                    0o644)
        # The rest of the directory as a real host shows it (RTX PRO 6000
        # Blackwell, bigstack-oss/cubecos issue 312). What a time-sliced
        # vGPU's gpu_instance_id and placement_id read is not published;
        # nothing here reads them, so they stay 0.
        for name, text in (('gpu_instance_id', '0\n'),
                           ('placement_id', '0\n'), ('vgpu_params', '\n'),
                           ('warm_update', '0\n')):
            self._write(os.path.join(nvidia, name), text, 0o644)

    def set_available_instances(self, device: str, type_id: str,
                                count: int) -> None:
        path = os.path.join(device, 'mdev_supported_types', type_id,
                            'available_instances')
        self._write(path, '%d\n' % count)

    def add_mdev(self, device: str, uuid: str, type_id: str) -> str:
        """Create mdev ``uuid`` of ``type_id`` below parent ``device``."""
        mdev = os.path.join(device, uuid)
        os.makedirs(mdev, exist_ok=True)
        tdir = os.path.join(device, 'mdev_supported_types', type_id)
        self._link(os.path.join(mdev, 'mdev_type'), tdir)
        self._link(os.path.join(tdir, 'devices', uuid), mdev)
        self._link(os.path.join(mdev, 'subsystem'), self._path('bus', 'mdev'))
        self._write(os.path.join(mdev, 'remove'), '', 0o200)
        if type_id.startswith('nvidia-'):
            # NVIDIA's plugin parameters, read when a guest starts.
            os.makedirs(os.path.join(mdev, vfio.NVIDIA_DIR), exist_ok=True)
            self._write(os.path.join(mdev, vfio.NVIDIA_DIR, 'vgpu_params'),
                        '\n', 0o644)
        self._link(self._path('bus', 'mdev', 'devices', uuid), mdev)
        return mdev


def _types_for(spec: specs.ModelSpec, available: dict[str, int]
               ) -> list[model.VGPUType]:
    return [model.VGPUType(
        id=t.id, name=t.name, available_instances=available[t.id],
        device_api=t.device_api, description=t.description)
        for t in spec.types]


def add_vfs(tree: SysfsTree, gpu: specs.GPUSpec,
            available: dict[str, dict[str, int]],
            devices: tuple[model.MediatedDevice, ...] = ()) -> dict[str, str]:
    """An SR-IOV GPU's VFs, as ``sriov-manage -e`` enables them.

    :returns: {parent name: VF directory}.
    """
    spec = gpu.model
    vfs = gpu.vf_addresses()
    parent_dirs = {}
    for vf, vf_dir in zip(vfs, tree.add_virtual_functions(gpu.address, vfs)):
        name = address.libvirt_name(vf)
        parent_dirs[name] = vf_dir
        if spec.vfio:
            held = [d for d in devices if d.parent == name]
            tree.make_vfio_vf(vf_dir, capacity.creatable(
                spec, available[name]), vfio.type_number(
                    held[0].type_id) if held else 0)
        else:
            tree.make_mdev_parent(vf_dir, vf, _types_for(spec,
                                                         available[name]))
    return parent_dirs


def lay_out(profile: specs.Profile, root: str,
            devices: tuple[model.MediatedDevice, ...] | None = None,
            mig_states: dict[str, dict] | None = None,
            vfs_enabled: bool = True) -> None:
    """Write ``profile`` below ``root`` as a kernel-style sysfs tree.

    :param devices: the devices there are (None: the profile's).
    :param mig_states: each MIG GPU's state (None: the profile's).
    :param vfs_enabled: False: as after a reboot, the SR-IOV GPUs' VFs
        wait for ``sriov-manage -e``.
    """
    kernel = capacity.KernelModel(profile, devices, mig_states)
    available = kernel.available()
    tree = SysfsTree(root)
    store = mig_state.MigStore(root)
    for gpu_address, state in kernel.mig_states.items():
        store.save(gpu_address, state)
    parent_dirs = {}
    for gpu in profile.gpus:
        spec = gpu.model
        if gpu.virtual_path:
            dev = tree.add_virtual_device(gpu.virtual_path)
            tree.make_mdev_parent(dev, os.path.basename(gpu.virtual_path),
                                  _types_for(spec, available[gpu.name]))
            parent_dirs[gpu.name] = dev
            continue
        dev = tree.add_pci_device(gpu.address, vendor_id=spec.vendor_id,
                                  device_id=spec.device_id,
                                  path=gpu.sysfs_path)
        if spec.sharing == specs.SRIOV and vfs_enabled:
            parent_dirs.update(add_vfs(tree, gpu, available, kernel.devices))
        elif spec.sharing == specs.SRIOV:
            tree.add_sriov_capability(gpu.address, spec.sriov_vfs)
        else:
            tree.make_mdev_parent(dev, gpu.address,
                                  _types_for(spec, available[gpu.name]))
            parent_dirs[gpu.name] = dev
    for dev in kernel.devices:
        if dev.kind == model.MDEV:
            tree.add_mdev(parent_dirs[dev.parent], dev.uuid, dev.type_id)
