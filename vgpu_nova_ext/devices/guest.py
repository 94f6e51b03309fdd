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
"""The libvirt ``<hostdev>`` elements that give a guest its vGPUs.

- an mdev: ``<hostdev mode='subsystem' type='mdev' model='vfio-pci'>``
  with the device's UUID;
- a VF of NVIDIA's vendor-specific VFIO: ``<hostdev mode='subsystem'
  type='pci' managed='no'>`` with the VF's address. ``managed='no'``
  because the VF must stay bound to NVIDIA's variant driver: libvirt must
  not rebind it to vfio-pci.

The display is off unless the flavor asks for it
(:mod:`vgpu_nova_ext.nova.extra_specs`): a vGPU's display needs a graphics
device and a consumer of it (Nova's VNC or SPICE console). Read back,
:func:`domains` is the one reader of a host's guests and their devices,
for the driver (through nova-compute's connection) and the ownership audit
(a read-only one).
"""

import logging
from xml.etree import ElementTree as etree

from vgpu_nova_ext.host import address
from vgpu_nova_ext.host import model

LOG = logging.getLogger(__name__)


def hostdev(kind: str, device_id: str, display: bool = False,
            ramfb: bool = False) -> etree.Element:
    """The ``<hostdev>`` element of one device.

    :param display: the mdev drives the guest's console (libvirt's
        ``display='on'``); ``ramfb``: and a boot console (``ramfb='on'``).
    """
    element = etree.Element('hostdev', mode='subsystem')
    source = etree.SubElement(element, 'source')
    if kind == model.VF:
        pci = address.normalize_pci_address(device_id)
        if pci is None:
            raise ValueError('%r is not a VF address' % device_id)
        element.set('type', 'pci')
        element.set('managed', 'no')
        domain, bus, rest = pci.split(':')
        slot, function = rest.split('.')
        etree.SubElement(source, 'address', domain='0x' + domain,
                         bus='0x' + bus, slot='0x' + slot,
                         function='0x' + function)
        return element
    element.set('type', 'mdev')
    # As libvirt writes it back (and as Nova parses it when it detaches
    # the device for a suspend): an mdev is never "managed".
    element.set('managed', 'no')
    element.set('model', 'vfio-pci')
    element.set('display', 'on' if display else 'off')
    if display and ramfb:
        element.set('ramfb', 'on')
    etree.SubElement(source, 'address', uuid=device_id)
    return element


def hostdev_xml(kind: str, device_id: str, display: bool = False,
                ramfb: bool = False) -> str:
    return etree.tostring(hostdev(kind, device_id, display, ramfb),
                          encoding='unicode')


def devices_in_domain(domain_xml: str, kinds: tuple[str, ...] = (
        'mdev', 'pci')) -> list[str]:
    """The vGPU device ids (mdev UUIDs, VF addresses) a domain uses.

    :param kinds: the hostdev types to list (``mdev``, ``pci``).
    """
    root = etree.fromstring(domain_xml)
    found = []
    for element in root.iter('hostdev'):
        source = element.find('source/address')
        if source is None or element.get('type') not in kinds:
            continue
        if element.get('type') == 'mdev' and source.get('uuid'):
            found.append(source.get('uuid'))
        elif element.get('type') == 'pci' and source.get('bus'):
            found.append('%s:%s:%s.%s' % tuple(
                source.get(k)[2:].lower().zfill(w) for k, w in (
                    ('domain', 4), ('bus', 2), ('slot', 2),
                    ('function', 1))))
    return found


def mdevs_in_domain(domain_xml: str) -> list[str]:
    """The mdev UUIDs a domain uses."""
    return devices_in_domain(domain_xml, kinds=('mdev',))


def domains(connection, read_xml: bool = True
            ) -> tuple[dict[str, list[str]], bool]:
    """The vGPU devices in the XML of each of the host's domains.

    :param connection: a libvirt connection (nova-compute's, a read-only
        one, or Nova's fake libvirt in tests).
    :param read_xml: False: only the domains' UUIDs (no device lists),
        without reading every domain's XML.
    :returns: {domain UUID: device ids in its XML}, running and defined
        domains alike, and whether every domain could be read (one that
        vanishes while listed is left out with a warning).
    """
    found = {}
    every_domain = True
    # VIR_CONNECT_LIST_DOMAINS_ACTIVE | _INACTIVE: running and defined
    # guests alike (named, not 0, which fakes read as "none").
    for domain in connection.listAllDomains(1 | 2):
        uuid = domain.UUIDString()
        if not read_xml:
            found[uuid] = []
            continue
        try:
            found[uuid] = devices_in_domain(domain.XMLDesc(0))
        except Exception as exc:   # libvirtError: the domain went away
            LOG.warning('cannot read the domain %s (%s): its vGPU devices '
                        'are not counted as used this time', uuid, exc)
            every_domain = False
    return found, every_domain
