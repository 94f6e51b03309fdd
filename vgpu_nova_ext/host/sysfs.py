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
"""Read the host through the kernel's sysfs (the writes: sysfs_backend).

The reader follows the links exactly as the kernel lays them out (see
:mod:`vgpu_nova_ext.host.simulated.tree`) and never assumes how deep a
device sits below its root port. Every path is taken below a configurable
root, so a test or a dry run can point it at a tree of files.
"""

import errno
import os
import re
import stat
import uuid as uuidlib

from oslo_log import log as logging

from vgpu_nova_ext import exception
from vgpu_nova_ext.host import address
from vgpu_nova_ext.host import model
from vgpu_nova_ext.host import vfio

LOG = logging.getLogger(__name__)

NVIDIA_VENDOR_ID = '0x10de'
#: A sysfs attribute is at most a page; leave room for larger pages.
MAX_ATTRIBUTE_BYTES = 65536
# PCI base class 0x03 is "display controller" (VGA 0x0300, 3D 0x0302).
_DISPLAY_CLASS_RE = re.compile(r'^0x03[0-9a-f]{4}$', re.IGNORECASE)
_HEX_ID_RE = re.compile(r'^0x[0-9a-f]{4}$', re.IGNORECASE)


class SysfsReader:
    """Builds a :class:`model.HostSnapshot` from a sysfs tree."""

    def __init__(self, root: str = '/') -> None:
        # Real, so that resolved links compare with it.
        self.root = os.path.realpath(root)
        self.sys = os.path.join(self.root, 'sys')
        # type directory -> (its stat key, (name, device_api, description))
        self._type_attrs: dict[str, tuple[tuple[int, int, int],
                                          tuple[str | None, str,
                                                str | None]]] = {}

    # -- low level -------------------------------------------------------
    def _show(self, path: str) -> str:
        """A path as the operator knows it (below the real root)."""
        rel = os.path.relpath(path, self.root)
        return '/' + rel if self.root != '/' else path

    def _resolve(self, link: str) -> str:
        """Follow a link, keeping absolute targets inside the root."""
        seen = 0
        path = link
        while os.path.islink(path):
            seen += 1
            if seen > 40:
                raise exception.HostReadError(
                    '%s: too many levels of symbolic links' % self._show(link))
            target = os.readlink(path)
            if os.path.isabs(target):
                path = os.path.join(self.root, target.lstrip('/'))
            else:
                path = os.path.join(os.path.dirname(path), target)
            path = os.path.normpath(path)
        real = os.path.realpath(path)
        if not real.startswith(self.sys + os.sep):
            raise exception.HostReadError(
                '%s leads to %s, outside /sys: the tree is not a sysfs tree'
                % (self._show(link), real))
        if not os.path.isdir(real):
            raise exception.HostReadError(
                '%s points to %s, which does not exist: the device went away '
                'while it was being read (run the command again) or the '
                'tree is not a sysfs tree' % (self._show(link),
                                              self._show(real)))
        return real

    def _read(self, path: str, required: bool = True) -> str | None:
        """A sysfs attribute's text.

        The kernel's attributes are regular files of at most a page, never
        links: anything else (a FIFO that would block, a device that reads
        without end, a link out of the tree) is no sysfs attribute.
        """
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW
                         | os.O_CLOEXEC)
        except FileNotFoundError:
            if required:
                raise exception.HostReadError(
                    '%s is missing: the vendor driver did not expose it; '
                    'check that the vGPU manager is loaded' % self._show(path))
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise exception.HostReadError(
                    '%s is a symbolic link, which no sysfs attribute is: the '
                    'tree is not a sysfs tree' % self._show(path))
            raise exception.HostReadError(
                'cannot read %s: %s; run as a user that can read sysfs '
                '(root or the nova user)' % (self._show(path), exc.strerror))
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise exception.HostReadError(
                    '%s is not a sysfs attribute (a FIFO, a device or a '
                    'directory): the tree is not a sysfs tree'
                    % self._show(path))
            data = os.read(fd, MAX_ATTRIBUTE_BYTES + 1)
        except OSError as exc:
            raise exception.HostReadError(
                'cannot read %s: %s' % (self._show(path), exc.strerror))
        finally:
            os.close(fd)
        if len(data) > MAX_ATTRIBUTE_BYTES:
            raise exception.HostReadError(
                '%s holds more than %d bytes, which no sysfs attribute does: '
                'the tree is not a sysfs tree' % (self._show(path),
                                                  MAX_ATTRIBUTE_BYTES))
        try:
            return data.decode('utf-8').strip()
        except UnicodeDecodeError:
            raise exception.HostReadError(
                '%s is not text: the tree is not a sysfs tree or the driver '
                'is broken (see dmesg)' % self._show(path))

    def _read_int(self, path: str, required: bool = True) -> int | None:
        text = self._read(path, required)
        if text is None:
            return None
        try:
            value = int(text, 10)
        except ValueError:
            value = -1
        if value < 0:
            raise exception.HostReadError(
                '%s reads %r where the kernel writes a whole number >= 0; '
                'the file is not a sysfs attribute or the driver is broken '
                '(see dmesg)' % (self._show(path), text))
        return value

    def _listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise exception.HostReadError(
                'cannot list %s: %s' % (self._show(path), exc))

    # -- naming ----------------------------------------------------------
    def _parent_identity(self, device_dir: str) -> tuple[str, str, bool]:
        """(libvirt name, address, virtual?) of a device directory."""
        virtual_root = os.path.join(self.sys, 'devices', 'virtual')
        if device_dir.startswith(virtual_root + os.sep):
            name = address.virtual_name(
                os.path.relpath(device_dir, virtual_root))
            return name, name, True
        pci = address.normalize_pci_address(os.path.basename(device_dir))
        if pci is None or ':' not in os.path.basename(device_dir):
            raise exception.HostReadError(
                '%s is an mdev parent that is neither a PCI device nor below '
                '/sys/devices/virtual; this project does not know how to '
                'name it' % self._show(device_dir))
        return address.libvirt_name(pci), pci, False

    # -- types -----------------------------------------------------------
    def _read_types(self, device_dir: str) -> tuple[model.VGPUType, ...]:
        types_dir = os.path.join(device_dir, 'mdev_supported_types')
        types = []
        for type_id in self._listdir(types_dir):
            tdir = types_dir + '/' + type_id
            try:
                st = os.stat(tdir)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                continue
            # A type's name, device API and description are fixed while
            # the vendor driver is loaded (a reload makes new directories,
            # with new inodes): read once, not at every periodic task.
            key = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
            cached = self._type_attrs.get(tdir)
            if cached is None or cached[0] != key:
                cached = (key, (
                    self._read(os.path.join(tdir, 'name'), False) or None,
                    self._read(os.path.join(tdir, 'device_api')),
                    self._read(os.path.join(tdir, 'description'), False)
                    or None))
                self._type_attrs[tdir] = cached
            name, device_api, description = cached[1]
            types.append(model.VGPUType(
                id=type_id, name=name,
                available_instances=self._read_int(
                    tdir + '/available_instances'),
                device_api=device_api, description=description))
        return tuple(types)

    def _pci_id(self, device_dir: str, attr: str) -> str | None:
        path = os.path.join(device_dir, attr)
        text = self._read(path, required=False)
        if text is None:
            return None
        if not _HEX_ID_RE.match(text):
            raise exception.HostReadError(
                '%s reads %r where the kernel writes a PCI id such as '
                '0x10de' % (self._show(path), text))
        return text.lower()

    # -- scan ------------------------------------------------------------
    def signature(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """What changes when a device or a virtual function comes or goes.

        Two directory reads, the mdev bus's devices and the PCI bus's;
        a VF given a vGPU type (NVIDIA's vendor VFIO) is not among them.
        """
        bus = os.path.join(self.sys, 'bus')
        return (tuple(self._listdir(os.path.join(bus, 'mdev', 'devices'))),
                tuple(self._listdir(os.path.join(bus, 'pci', 'devices'))))

    def scan(self) -> model.HostSnapshot:
        parents_by_gpu: dict[str, list[model.ParentDevice]] = {}
        gpu_dirs: dict[str, tuple[str, bool]] = {}
        mdev_bus = os.path.join(self.sys, 'class', 'mdev_bus')
        for entry in self._listdir(mdev_bus):
            device_dir = self._resolve(os.path.join(mdev_bus, entry))
            name, addr, virtual = self._parent_identity(device_dir)
            parent = model.ParentDevice(name=name, address=addr,
                                        types=self._read_types(device_dir))
            gpu_dir = device_dir
            physfn = os.path.join(device_dir, 'physfn')
            if not virtual and os.path.islink(physfn):
                gpu_dir = self._resolve(physfn)
            gpu_name = self._parent_identity(gpu_dir)[0]
            parents_by_gpu.setdefault(gpu_name, []).append(parent)
            gpu_dirs[gpu_name] = (gpu_dir, virtual)

        vfio_devices = []
        for vf_dir in self._vfio_vfs():
            parent, device = self._vfio_parent(vf_dir)
            gpu_dir = self._resolve(os.path.join(vf_dir, 'physfn'))
            gpu_name = self._parent_identity(gpu_dir)[0]
            parents_by_gpu.setdefault(gpu_name, []).append(parent)
            gpu_dirs[gpu_name] = (gpu_dir, False)
            if device is not None:
                vfio_devices.append(device)

        gpus = [self._gpu(name, *gpu_dirs[name], tuple(parents))
                for name, parents in parents_by_gpu.items()]
        gpus.extend(self._idle_gpus(set(parents_by_gpu)))
        gpus.sort(key=lambda g: (g.virtual, g.address))
        return model.HostSnapshot(
            gpus=tuple(gpus),
            mediated_devices=self._mdevs() + tuple(vfio_devices))

    # -- NVIDIA vendor-specific VFIO -----------------------------------------
    def _vfio_vfs(self) -> list[str]:
        """VF directories with NVIDIA's vendor VFIO interface."""
        pci_devices = os.path.join(self.sys, 'bus', 'pci', 'devices')
        found = []
        for entry in self._listdir(pci_devices):
            link = os.path.join(pci_devices, entry)
            if os.path.exists(os.path.join(link, vfio.NVIDIA_DIR,
                                           vfio.CREATABLE)):
                found.append(self._resolve(link))
        return found

    def vfio_current(self, vf_dir: str) -> int:
        return self._read_int(os.path.join(vf_dir, vfio.NVIDIA_DIR,
                                           vfio.CURRENT))

    def _gpu_instance(self, vf_dir: str) -> int | None:
        """A typed VF's GPU instance; None where it shows none.

        Only informative (what a time-sliced vGPU's file reads is not
        published), so an odd value is not an error.
        """
        text = self._read(os.path.join(vf_dir, vfio.NVIDIA_DIR,
                                       'gpu_instance_id'), False)
        try:
            return int(text) if text is not None else None
        except ValueError:
            return None

    def _vfio_parent(self, vf_dir: str):
        """(ParentDevice, MediatedDevice or None) of one VF."""
        name, addr, _ = self._parent_identity(vf_dir)
        text = self._read(os.path.join(vf_dir, vfio.NVIDIA_DIR,
                                       vfio.CREATABLE))
        current = self.vfio_current(vf_dir)
        types = {vfio.type_id(number): model.VGPUType(
            id=vfio.type_id(number), name=type_name or None,
            available_instances=0 if current else 1, device_api='vfio-pci')
            for number, type_name in vfio.parse_creatable(text)}
        device = None
        if current:
            held = vfio.type_id(current)
            types.setdefault(held, model.VGPUType(
                id=held, name=None, available_instances=0,
                device_api='vfio-pci'))
            device = model.MediatedDevice(
                uuid=addr, parent=name, type_id=held, kind=model.VF,
                gpu_instance=self._gpu_instance(vf_dir))
        return model.ParentDevice(name=name, address=addr,
                                  types=tuple(types.values())), device

    def _gpu(self, name: str, gpu_dir: str, virtual: bool,
             parents: tuple[model.ParentDevice, ...]) -> model.PhysicalGPU:
        if virtual:
            return model.PhysicalGPU(name=name, address=name, vendor_id=None,
                                     device_id=None, parents=parents,
                                     virtual=True)
        return model.PhysicalGPU(
            name=name, address=self._parent_identity(gpu_dir)[1],
            vendor_id=self._pci_id(gpu_dir, 'vendor'),
            device_id=self._pci_id(gpu_dir, 'device'),
            parents=tuple(sorted(parents, key=lambda p: p.address)),
            sriov_total_vfs=self._read_int(
                os.path.join(gpu_dir, 'sriov_totalvfs'), False) or 0,
            sriov_num_vfs=self._read_int(
                os.path.join(gpu_dir, 'sriov_numvfs'), False) or 0,
            driver=self._driver(gpu_dir))

    @staticmethod
    def _driver(device_dir: str) -> str | None:
        try:
            return os.path.basename(os.readlink(
                os.path.join(device_dir, 'driver')))
        except OSError:
            return None

    def _idle_gpus(self, known: set[str]) -> list[model.PhysicalGPU]:
        """NVIDIA display controllers that offer no mdev types now.

        An SR-IOV GPU whose VFs are not enabled, or a GPU whose vGPU manager
        is not loaded, shows up here so that ``check`` can say so instead of
        the host silently reporting nothing.
        """
        pci_devices = os.path.join(self.sys, 'bus', 'pci', 'devices')
        idle = []
        for entry in self._listdir(pci_devices):
            pci = address.normalize_pci_address(entry)
            if pci is None or address.libvirt_name(pci) in known:
                continue
            dev = self._resolve(os.path.join(pci_devices, entry))
            if os.path.islink(os.path.join(dev, 'physfn')):
                continue
            if self._pci_id(dev, 'vendor') != NVIDIA_VENDOR_ID:
                continue
            pci_class = self._read(os.path.join(dev, 'class'), False) or ''
            if not _DISPLAY_CLASS_RE.match(pci_class):
                continue
            idle.append(self._gpu(address.libvirt_name(pci), dev, False, ()))
        return idle

    def _follow(self, link: str) -> str | None:
        """Where a sysfs link points; None if it is gone.

        The kernel's links are relative and lead to real directories, so
        one readlink finds the target (an absolute target is taken inside
        the root). Anything else goes the long way (:meth:`_resolve`).
        A per-device step, kept cheap: a host holds hundreds of devices
        and nova-compute scans it every periodic task.
        """
        try:
            target = os.readlink(link)
        except FileNotFoundError:
            return None
        except OSError:
            return self._resolve(link)
        if os.path.isabs(target):
            path = os.path.join(self.root, target.lstrip('/'))
        else:
            path = os.path.join(os.path.dirname(link), target)
        path = os.path.normpath(path)
        if not path.startswith(self.sys + os.sep):
            raise exception.HostReadError(
                '%s points to %s, outside /sys: the tree is not a sysfs '
                'tree' % (self._show(link), target))
        return path

    def _mdevs(self) -> tuple[model.MediatedDevice, ...]:
        devices_dir = os.path.join(self.sys, 'bus', 'mdev', 'devices')
        mdevs = []
        parent_names: dict[str, str] = {}
        for entry in self._listdir(devices_dir):
            link = devices_dir + '/' + entry
            try:
                uuid = str(uuidlib.UUID(entry))
            except ValueError:
                raise exception.HostReadError(
                    '%s: %r is not a UUID, but every mediated device is '
                    'named by one' % (self._show(link), entry))
            mdev_dir = self._follow(link)
            try:
                # Only the type's name is wanted: the link's last part.
                type_id = mdev_dir and os.path.basename(
                    os.readlink(mdev_dir + '/mdev_type'))
            except FileNotFoundError:
                type_id = None
            except OSError as exc:
                raise exception.HostReadError(
                    'cannot read %s/mdev_type: %s' % (
                        self._show(mdev_dir), exc))
            if not type_id or not os.path.isdir(
                    mdev_dir + '/mdev_type'):
                # Removed since the directory was listed: not on the host.
                # Still listed: a broken entry, named (the kernel makes no
                # such thing; it is left out, as no device of any type).
                if os.path.lexists(link):
                    LOG.warning(
                        'mediated device %s is listed in %s but %s; it is '
                        'left out (check the kernel\'s log, or remove the '
                        'entry if this tree is not the kernel\'s)',
                        uuid, self._show(devices_dir),
                        'its link leads nowhere' if not (
                            mdev_dir and os.path.isdir(mdev_dir))
                        else 'its mdev_type does not lead to a type '
                             'directory' if type_id
                        else 'it has no mdev_type')
                continue
            parent_dir = os.path.dirname(mdev_dir)
            parent_name = parent_names.get(parent_dir)
            if parent_name is None:
                parent_name = parent_names[parent_dir] = \
                    self._parent_identity(parent_dir)[0]
            mdevs.append(model.MediatedDevice(
                uuid=uuid, parent=parent_name, type_id=type_id))
        return tuple(mdevs)
