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
"""Nova's fake libvirt, with node devices for mdevs.

The fake libvirt that ships in the nova wheel (``nova/tests/fixtures/
libvirt.py``) accepts ``nodeDeviceDefineXML`` and returns nothing. This
subclass keeps what is defined, checks the XML against libvirt's own
``nodedev.rng``, and carries ``create``/``destroy`` out on a simulated
host's sysfs, as libvirt does through mdevctl on a real one.
"""

from xml.etree import ElementTree as etree

from vgpu_nova_ext.host import libvirt as libvirt_backend


def load():
    """Nova's fake libvirt module, or None without the nova package."""
    try:
        from nova.tests.fixtures import libvirt as fakelibvirt
    except ImportError:
        return None
    return fakelibvirt


def connection_class(fakelibvirt):

    class MdevNodeDevice(fakelibvirt.NodeDevice):

        def __init__(self, connection, xml, host):
            super().__init__(connection, xml=xml)
            root = etree.fromstring(xml)
            self._uuid = root.find('capability/uuid').text
            self._type = root.find('capability/type').get('id')
            self._host = host
            self._autostart = False
            self._name = libvirt_backend.nodedev_names(
                self._uuid, self._parent)[0]

        def isActive(self):
            return int(self._host.device_exists(self._uuid))

        def create(self, flags=0):
            self._host.create_device(self._parent, self._type, self._uuid)
            return 0

        def destroy(self):
            self._host.remove_device(self._uuid)
            return 0

        def setAutostart(self, autostart):
            self._autostart = bool(autostart)
            return 0

        def autostart(self):
            return int(self._autostart)

        def undefine(self):
            self._conn_defined.pop(self._name, None)
            return 0

    class MdevConnection(fakelibvirt.Connection):

        def __init__(self, host, validate):
            super().__init__('qemu:///system', False)
            self.host = host
            self.validate = validate
            self.defined: dict[str, MdevNodeDevice] = {}

        def nodeDeviceDefineXML(self, xml, flags):
            self.validate(xml)
            device = MdevNodeDevice(self, xml, self.host)
            device._conn_defined = self.defined
            if device.name() in self.defined:
                raise fakelibvirt.make_libvirtError(
                    fakelibvirt.libvirtError, 'device exists',
                    error_code=fakelibvirt.VIR_ERR_INTERNAL_ERROR)
            self.defined[device.name()] = device
            return device

        def nodeDeviceLookupByName(self, name):
            if name in self.defined:
                return self.defined[name]
            if name.startswith('mdev_'):
                # As libvirt answers (nova's fake raises KeyError here).
                raise fakelibvirt.make_libvirtError(
                    fakelibvirt.libvirtError,
                    'no nodedev with matching name %s' % name,
                    error_code=fakelibvirt.VIR_ERR_NO_NODE_DEVICE,
                    error_domain=fakelibvirt.VIR_FROM_NODEDEV)
            return super().nodeDeviceLookupByName(name)

        def boot(self):
            """A host reboot: autostart devices start again."""
            for device in self.defined.values():
                if device.autostart() and not device.isActive():
                    device.create()

    return MdevConnection


def mdev_hotplug(fakelibvirt):
    """attachDevice/detachDevice of fake Domains, taught mdev hostdevs.

    Nova's fake keeps an mdev hostdev as {type, model, address_uuid} when it
    parses a domain, but its attachDevice/detachDevice only know PCI
    hostdevs (detaching an mdev raises KeyError). Real libvirt hot-plugs
    mdevs, and Nova's suspend/resume relies on it; the pair returned here
    does the same on the fake's device list, by UUID, and hands every other
    device to the fake's own methods.
    """
    attach = fakelibvirt.Domain.attachDevice
    detach = fakelibvirt.Domain.detachDevice

    def _mdev(xml):
        if not xml.lstrip().startswith('<hostdev'):
            return None
        element = etree.fromstring(xml)
        if element.get('type') != 'mdev':
            return None
        return {'type': 'mdev', 'model': element.get('model', 'vfio-pci'),
                'address_uuid': element.find('source/address').get('uuid')}

    def attach_device(self, xml):
        info = _mdev(xml)
        if info is None:
            return attach(self, xml)
        self._def['devices']['hostdevs'].append(info)
        return True

    def detach_device(self, xml):
        info = _mdev(xml)
        if info is None:
            return detach(self, xml)
        hostdevs = self._def['devices']['hostdevs']
        for attached in hostdevs:
            if attached.get('address_uuid') == info['address_uuid']:
                hostdevs.remove(attached)
                return True
        raise fakelibvirt.make_libvirtError(
            fakelibvirt.libvirtError,
            'device not found: mdev %s' % info['address_uuid'],
            error_code=fakelibvirt.VIR_ERR_DEVICE_MISSING)

    return attach_device, detach_device
