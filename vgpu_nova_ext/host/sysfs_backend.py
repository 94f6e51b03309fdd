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
"""The sysfs host backend: devices made and removed on the kernel's mdev bus.

The read side is :class:`vgpu_nova_ext.host.sysfs.SysfsReader`; every
write goes to :mod:`vgpu_nova_ext.host.writes`, in place or through the
privsep daemon (:mod:`vgpu_nova_ext.host.privsep`).
"""

import errno
import os
import time

from vgpu_nova_ext import exception
from vgpu_nova_ext.host import address
from vgpu_nova_ext.host import base
from vgpu_nova_ext.host import model
from vgpu_nova_ext.host import nvml
from vgpu_nova_ext.host import privsep
from vgpu_nova_ext.host import sysfs
from vgpu_nova_ext.host import vfio
from vgpu_nova_ext.host import vgpu_params

_ERRNO = {
    errno.ENOSPC: (exception.DeviceCapacityError,
                   'no room for another device of that type on the parent'),
    errno.EDQUOT: (exception.DeviceCapacityError,
                   'no room for another device of that type on the parent'),
    errno.EBUSY: (exception.DeviceBusyError,
                  'the device is busy (a guest still uses it?)'),
    errno.ENODEV: (exception.DeviceGoneError,
                   'the parent device is gone'),
    errno.ENOENT: (exception.DeviceGoneError, 'no such device or type'),
    errno.EEXIST: (exception.DeviceExistsError,
                   'a device with that UUID exists already'),
    errno.EACCES: (exception.DeviceError,
                   'permission denied: host writes need privilege; check '
                   'that the privsep daemon can start ([vgpu_nova_ext_'
                   'privileged] helper_command, "vgpu-nova-ext check")'),
    errno.EPERM: (exception.DeviceError,
                  'permission denied: run as root or as nova-compute'),
    errno.EINVAL: (exception.DeviceError,
                   'the kernel refused the request as invalid'),
}


class SysfsBackend(base.HostBackend):
    """Host backend on the kernel's mdev bus in sysfs.

    Creates an mdev by writing its UUID to ``<parent>/mdev_supported_types/
    <type>/create`` and removes it by writing ``1`` to
    ``/sys/bus/mdev/devices/<uuid>/remove``, waiting (bounded) for it to
    appear or vanish. Devices made this way do not survive a host reboot:
    the ledger's reconcile makes them again (or use the libvirt backend).
    """

    def __init__(self, sysfs_root: str = '/', timeout: float = 10.0,
                 privileged: bool = True,
                 facts: 'nvml.FactsSource | None | bool' = True,
                 **kwargs) -> None:
        # facts: where the GPU facts sysfs lacks come from; True: NVML on
        # the real host (sysfs_root "/"), where it is installed.
        self.reader = sysfs.SysfsReader(sysfs_root)
        if facts is True:
            facts = nvml.open_nvml() if sysfs_root == '/' else None
        self.facts = facts or None
        self.timeout = timeout
        self._parents: dict[str, str] | None = None
        # Every write goes through privsep (or in place where no privilege
        # is needed): see vgpu_nova_ext.host.privsep.
        self.writer = privsep.writer(privileged)

    def describe(self) -> str:
        return 'sysfs at %s' % self.reader.root

    def scan(self) -> model.HostSnapshot:
        return nvml.apply(self.reader.scan(), self.facts)

    def signature(self) -> object:
        return self.reader.signature()

    # -- write side --------------------------------------------------------
    def _parent_dir(self, parent: str) -> str:
        """The directory of a parent device by its libvirt name."""
        if self._parents is None or parent not in self._parents:
            mdev_bus = os.path.join(self.reader.sys, 'class', 'mdev_bus')
            found = {}
            for entry in self.reader._listdir(mdev_bus):
                device_dir = self.reader._resolve(
                    os.path.join(mdev_bus, entry))
                found[self.reader._parent_identity(device_dir)[0]] = \
                    device_dir
            for vf_dir in self.reader._vfio_vfs():
                found[self.reader._parent_identity(vf_dir)[0]] = vf_dir
            self._parents = found
        try:
            return self._parents[parent]
        except KeyError:
            raise exception.DeviceGoneError(
                'parent device %s is neither on the mdev bus nor a VF with '
                'NVIDIA\'s vGPU interface; is the vGPU manager loaded?'
                % parent)

    def _vfio_dir(self, parent: str) -> str | None:
        """The VF directory if ``parent`` is a vendor-VFIO VF."""
        directory = self._parent_dir(parent)
        return directory if vfio.is_vfio_vf(directory) else None

    def device_kind_of(self, parent: str) -> str:
        return model.VF if self._vfio_dir(parent) else model.MDEV

    def new_device_id(self, parent: str, type_id: str) -> str:
        vf_dir = self._vfio_dir(parent)
        if vf_dir:
            # The device is the VF itself.
            return self.reader._parent_identity(vf_dir)[1]
        return super().new_device_id(parent, type_id)

    def _device_dir(self, device_id: str) -> str:
        return os.path.join(self.reader.sys, 'bus', 'mdev', 'devices',
                            device_id)

    def _write(self, what: str, func, *args) -> None:
        """One of the host writes of :mod:`vgpu_nova_ext.host.writes`."""
        try:
            func(self.reader.root, *args)
        except OSError as exc:
            cls, why = _ERRNO.get(exc.errno, (
                exception.DeviceError, exc.strerror or str(exc)))
            raise cls('%s: the kernel refused the write: %s' % (what, why))

    def _wait_until(self, done, what: str, expected: str) -> None:
        """Poll ``done()`` with backoff until true, or time out."""
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while not done():
            if time.monotonic() > deadline:
                raise exception.DeviceTimeoutError(
                    '%s: %s within %.0f s; check dmesg and the vGPU manager '
                    '(nvidia-vgpu-mgr) log' % (what, expected, self.timeout))
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _wait(self, device_id: str, present: bool, what: str) -> None:
        self._wait_until(
            lambda: os.path.lexists(self._device_dir(device_id)) == present,
            what, '%s did not %s' % (device_id,
                                     'appear' if present else 'vanish'))

    def available(self, parent: str, type_id: str) -> int:
        vf_dir = self._vfio_dir(parent)
        if vf_dir:
            if self.reader.vfio_current(vf_dir):
                return 0
            creatable = self.reader._read(os.path.join(
                vf_dir, vfio.NVIDIA_DIR, vfio.CREATABLE))
            return int(vfio.type_number(type_id) in [
                n for n, _ in vfio.parse_creatable(creatable)])
        path = os.path.join(self._parent_dir(parent), 'mdev_supported_types',
                            type_id, 'available_instances')
        value = self.reader._read_int(path, required=False)
        return value or 0

    def create_device(self, parent: str, type_id: str,
                      device_id: str) -> None:
        what = 'creating %s device %s on %s' % (type_id, device_id, parent)
        vf_dir = self._vfio_dir(parent)
        if vf_dir:
            number = vfio.type_number(type_id)
            if number is None:
                raise exception.DeviceGoneError(
                    '%s: %s is not an NVIDIA vGPU type' % (what, type_id))
            self._write(what, self.writer.set_vf_vgpu_type,
                        self.reader._parent_identity(vf_dir)[1], number)
            self._wait_vf(vf_dir, number, what)
            return
        parent_dir = self._parent_dir(parent)
        if not os.path.exists(os.path.join(
                parent_dir, 'mdev_supported_types', type_id, 'create')):
            raise exception.DeviceGoneError(
                '%s: %s offers no type %s' % (what, parent, type_id))
        # The device's directory is named as its mdev_bus entry.
        self._write(what, self.writer.create_mdev,
                    os.path.basename(parent_dir), type_id, device_id)
        self._wait(device_id, True, what)

    def _vf_of(self, device_id: str) -> str | None:
        """The VF directory of a vendor-VFIO device id (a PCI address)."""
        pci = address.normalize_pci_address(device_id)
        if pci is None:
            return None
        link = os.path.join(self.reader.sys, 'bus', 'pci', 'devices', pci)
        return self.reader._resolve(link) if os.path.lexists(link) else None

    def _wait_vf(self, vf_dir: str, number: int, what: str) -> None:
        self._wait_until(lambda: self.reader.vfio_current(vf_dir) == number,
                         what, 'current_vgpu_type did not become %d' % number)

    def remove_device(self, device_id: str) -> None:
        what = 'removing device %s' % device_id
        vf_dir = self._vf_of(device_id)
        if vf_dir is not None:
            if self.reader.vfio_current(vf_dir):
                self._write(what, self.writer.set_vf_vgpu_type,
                            address.normalize_pci_address(device_id), 0)
                self._wait_vf(vf_dir, 0, what)
            return
        if not os.path.lexists(self._device_dir(device_id)):
            return
        self._write(what, self.writer.remove_mdev, device_id)
        self._wait(device_id, False, what)

    def mig_command(self, gpu_address: str, command: str,
                    argument: str = '') -> None:
        try:
            self.writer.mig_command(self.reader.root, gpu_address, command,
                                    argument)
        except OSError as exc:
            # What the kernel said to a write the step made.
            raise exception.DeviceError('%s on GPU %s failed: %s' % (
                command, gpu_address, exc.strerror or exc))

    def _params_path(self, kind: str, device_id: str) -> str:
        device = (os.path.join(self.reader.sys, 'bus', 'pci', 'devices',
                               device_id) if kind == model.VF
                  else self._device_dir(device_id))
        return os.path.join(device, vfio.NVIDIA_DIR, vgpu_params.ATTRIBUTE)

    def read_vgpu_params(self, kind: str, device_id: str
                         ) -> tuple[tuple[str, str], ...] | None:
        path = self._params_path(kind, device_id)
        if not os.path.exists(path):
            return None     # not NVIDIA's, or gone
        try:
            return vgpu_params.parse(self.reader._read(path) or '')
        except (ValueError, exception.HostReadError):
            # Written by someone else in a form of theirs: not ours, so
            # never equal to what a flavor asks.
            return (('?', '?'),)

    def set_vgpu_params(self, kind: str, device_id: str,
                        params: tuple[tuple[str, str], ...]) -> None:
        what = 'writing the vGPU parameters of %s device %s' % (
            kind, device_id)
        self._write(what, self.writer.set_vgpu_params, kind, device_id,
                    vgpu_params.text(params))

    def device_exists(self, device_id: str) -> bool:
        vf_dir = self._vf_of(device_id)
        if vf_dir is not None:
            return bool(self.reader.vfio_current(vf_dir))
        return os.path.lexists(self._device_dir(device_id))


class VfioBackend(SysfsBackend):
    """NVIDIA's vendor-specific VFIO (see :mod:`vgpu_nova_ext.host.vfio`).

    The sysfs backend reads and drives both the mdev bus and these VFs;
    this name is for the hosts that only have the latter.
    """

    def describe(self) -> str:
        return 'NVIDIA vendor VFIO in sysfs at %s' % self.reader.root
