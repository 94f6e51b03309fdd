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
"""Devices through libvirt's node-device API, as Nova 32+ makes them.

A device is defined (``nodeDeviceDefineXML``), started (``create``) and
set to start at boot (``setAutostart``); freed for good it is stopped
(``destroy``) and undefined (``undefine``). libvirt keeps the definitions
with mdevctl, so devices come back after a host reboot through the host's
own machinery. The host is read through sysfs, which is what libvirt
itself reads. NVIDIA's vendor-specific VFIO VFs have no node-device
definition: they are driven through sysfs.

The default backend inside nova-compute.
"""

import importlib
from xml.etree import ElementTree as etree

from vgpu_nova_ext import exception
from vgpu_nova_ext.host import address
from vgpu_nova_ext.host import sysfs_backend


def nodedev_xml(parent: str, type_id: str, device_uuid: str) -> str:
    """The node device XML of an mdev (libvirt's ``nodedev.rng``).

    libvirt names a defined device itself; the name given (which the
    schema requires) is the one it will choose.
    """
    device = etree.Element('device')
    etree.SubElement(device, 'name').text = nodedev_names(device_uuid,
                                                          parent)[0]
    etree.SubElement(device, 'parent').text = parent
    capability = etree.SubElement(device, 'capability', type='mdev')
    etree.SubElement(capability, 'type', id=type_id)
    etree.SubElement(capability, 'uuid').text = device_uuid
    return etree.tostring(device, encoding='unicode')


def nodedev_names(device_uuid: str, parent: str) -> list[str]:
    """The names libvirt gives an mdev node device, newest form first.

    libvirt 7.8+ names it ``mdev_<uuid>_<parent address>``; older ones
    ``mdev_<uuid>``, with ``_`` for ``-``, ``:`` and ``.``.
    """
    uuid_part = device_uuid.replace('-', '_')
    pci = address.normalize_pci_address(parent)
    parent_part = (pci.replace(':', '_').replace('.', '_') if pci
                   else parent)
    return ['mdev_%s_%s' % (uuid_part, parent_part), 'mdev_%s' % uuid_part]


class LibvirtBackend(sysfs_backend.SysfsBackend):
    """Host backend on libvirt's node-device API."""

    def __init__(self, sysfs_root: str = '/', uri: str = 'qemu:///system',
                 connection=None, libvirt_module=None, timeout: float = 10.0,
                 **kwargs) -> None:
        super().__init__(sysfs_root=sysfs_root, timeout=timeout)
        self.uri = uri
        self._conn = connection
        self._libvirt = libvirt_module
        # device uuid -> parent name, for the node device's name.
        self._parents_of: dict[str, str] = {}

    def describe(self) -> str:
        return 'libvirt node devices at %s (host read from sysfs at %s)' % (
            self.uri, self.reader.root)

    @property
    def libvirt(self):
        if self._libvirt is None:
            try:
                self._libvirt = importlib.import_module('libvirt')
            except ImportError:
                raise exception.DeviceError(
                    'the libvirt backend needs the libvirt Python binding '
                    '(libvirt-python, or Debian\'s python3-libvirt) in '
                    'nova-compute\'s environment')
        return self._libvirt

    @property
    def conn(self):
        if self._conn is None:
            try:
                self._conn = self.libvirt.open(self.uri)
            except self.libvirt.libvirtError as exc:
                raise exception.DeviceError(
                    'cannot connect to libvirt at %s: %s; is libvirtd (or '
                    'virtnodedevd) running?' % (self.uri, exc))
        return self._conn

    def _lookup(self, device_uuid: str, parent: str | None):
        for name in nodedev_names(device_uuid, parent or ''):
            try:
                return self.conn.nodeDeviceLookupByName(name)
            except self.libvirt.libvirtError:
                continue
        return None

    def _fail(self, what: str, exc) -> exception.DeviceError:
        return exception.DeviceError('%s: libvirt said: %s' % (what, exc))

    def create_device(self, parent: str, type_id: str,
                      device_id: str) -> None:
        if self._vfio_dir(parent):
            return super().create_device(parent, type_id, device_id)
        what = 'creating %s device %s on %s' % (type_id, device_id, parent)
        try:
            device = self._lookup(device_id, parent)
            if device is None:
                device = self.conn.nodeDeviceDefineXML(
                    nodedev_xml(parent, type_id, device_id), 0)
            if device is None:
                raise exception.DeviceError(
                    '%s: libvirt defined no device' % what)
            if not device.isActive():
                device.create(0)
            device.setAutostart(1)
        except self.libvirt.libvirtError as exc:
            raise self._fail(what, exc)
        self._parents_of[device_id] = parent
        self._wait(device_id, True, what)

    def remove_device(self, device_id: str) -> None:
        if self._vf_of(device_id) is not None:
            return super().remove_device(device_id)
        what = 'removing device %s' % device_id
        parent = self._parents_of.get(device_id)
        if parent is None:
            found = [d for d in self.scan().mediated_devices
                     if d.device_id == device_id]
            parent = found[0].parent if found else None
        try:
            device = self._lookup(device_id, parent)
            if device is None:
                # Not libvirt's (made through sysfs before): remove it so.
                return super().remove_device(device_id)
            if device.isActive():
                device.destroy()
            device.undefine()
        except self.libvirt.libvirtError as exc:
            raise self._fail(what, exc)
        self._parents_of.pop(device_id, None)
        self._wait(device_id, False, what)
