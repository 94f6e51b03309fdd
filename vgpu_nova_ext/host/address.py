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
"""Device addresses as operators write them and as libvirt names them.

An operator may write a PCI address in any of the forms tools print
(``0000:84:00.0``, ``84:00.0``, ``0000:84:00.0`` in upper case, or libvirt's
``pci_0000_84_00_0``); all mean the same device. Virtual mdev parents such as
the kernel's mtty sample live under ``/sys/devices/virtual`` and are named as
Nova and libvirt name them: the path below that directory with ``/`` turned
into ``_`` (``mtty/mtty`` is ``mtty_mtty``).
"""

import dataclasses
import re
import uuid

# The domain as the kernel writes it (4 digits, more for VMD domains) or
# as nvidia-smi prints it (8 digits: 00000000:82:00.0).
_PCI_RE = re.compile(
    r'^(?:(?P<domain>[0-9a-f]{4,8}):)?(?P<bus>[0-9a-f]{2}):'
    r'(?P<slot>[0-9a-f]{2})\.(?P<function>[0-7])$', re.IGNORECASE)
_LIBVIRT_PCI_RE = re.compile(
    r'^pci_(?P<domain>[0-9a-f]{4})_(?P<bus>[0-9a-f]{2})_'
    r'(?P<slot>[0-9a-f]{2})_(?P<function>[0-7])$', re.IGNORECASE)
_VIRTUAL_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]*\Z')
# PCI allows 32 devices (slots) per bus.
_MAX_SLOT = 0x1f

PCI = 'pci'
VIRTUAL = 'virtual'


@dataclasses.dataclass(frozen=True)
class DeviceAddress:
    """A normalised device address.

    ``value`` is ``0000:84:00.0`` (lower case, with domain) for PCI devices
    and the libvirt-style name (``mtty_mtty``) for virtual parents.
    """

    kind: str
    value: str

    @property
    def libvirt_name(self) -> str:
        return libvirt_name(self.value) if self.kind == PCI else self.value


def normalize_pci_address(text: str) -> str | None:
    """Return ``dddd:bb:ss.f`` in lower case, or None if not a PCI address."""
    text = text.strip()
    match = _PCI_RE.match(text) or _LIBVIRT_PCI_RE.match(text)
    if not match:
        return None
    if int(match['slot'], 16) > _MAX_SLOT:
        return None
    domain = '%04x' % int(match['domain'] or '0', 16)
    return '%s:%s:%s.%s' % (domain, match['bus'].lower(),
                            match['slot'].lower(), match['function'])


def is_device_id(text: str) -> bool:
    """Whether ``text`` names a vGPU device as the kernel does.

    An mediated device is named by its UUID (lower case, as the kernel
    writes it), a virtual function by its full PCI address.
    """
    try:
        if str(uuid.UUID(text)) == text:
            return True
    except ValueError:
        pass
    return normalize_pci_address(text) == text


def libvirt_name(pci_address: str) -> str:
    """``0000:84:00.0`` -> ``pci_0000_84_00_0`` (libvirt's node device)."""
    return 'pci_' + pci_address.replace(':', '_').replace('.', '_')


def virtual_name(path_below_virtual: str) -> str:
    """``mtty/mtty`` (below /sys/devices/virtual) -> ``mtty_mtty``."""
    return path_below_virtual.strip('/').replace('/', '_')


def parse_device_address(text: str) -> DeviceAddress:
    """Parse what an operator wrote in ``device_addresses``.

    :raises ValueError: with a message that says which forms are accepted.
    """
    pci = normalize_pci_address(text)
    if pci is not None:
        return DeviceAddress(PCI, pci)
    text = text.strip()
    if text.lower().startswith('pci_') or ':' in text or not text:
        raise ValueError(
            "%r is not a PCI address: write it as DDDD:BB:SS.F (for "
            "example 0000:84:00.0; the domain may be left out and case "
            "does not matter)" % text)
    if not _VIRTUAL_RE.match(text):
        raise ValueError(
            "%r is neither a PCI address (DDDD:BB:SS.F, for example "
            "0000:84:00.0) nor a virtual parent name as libvirt names it "
            "(for example mtty_mtty)" % text)
    return DeviceAddress(VIRTUAL, text)
