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
"""NVIDIA vGPU: type names and the per-GPU limits the driver publishes.

Type names are ``<prefix> <board>-<framebuffer GB><series>``, for example
``GRID M60-2Q``, ``GRID A100-4-20C`` (MIG-backed) or ``NVIDIA A40-2Q``; the
prefix is ``GRID`` on older boards and ``NVIDIA`` on newer ones. The
driver's ``description`` reads ``num_heads=4, frl_config=60,
framebuffer=2048M, max_resolution=5120x2880, max_instance=4``.
"""

import re

from vgpu_nova_ext.vendors import base

PCI_VENDOR_ID = '0x10de'
_PREFIXES = ('GRID ', 'NVIDIA ')
_SERIES_RE = re.compile(r'-(?:\d+-)?\d+(?P<series>[A-Z]+)\d*$')
_FIELD_RE = re.compile(r'\s*([a-z_]+)\s*=\s*([^,]*)')


def parse_description(description: str | None) -> dict[str, str]:
    """``key=value, ...`` -> {key: value}; unknown text is ignored."""
    if not description:
        return {}
    return {key: value.strip()
            for key, value in _FIELD_RE.findall(description)}


class NvidiaVendor(base.VendorPlugin):

    priority = 10

    def claims(self, type_id: str, vendor_id: str | None) -> bool:
        return type_id.startswith('nvidia-') or vendor_id == PCI_VENDOR_ID

    def describe_type(self, type_id: str, name: str | None,
                      description: str | None) -> base.TypeInfo:
        short = (name or type_id).strip()
        for prefix in _PREFIXES:
            if short.startswith(prefix):
                short = short[len(prefix):].strip()
                break
        match = _SERIES_RE.search(short)
        fields = parse_description(description)
        return base.TypeInfo(
            short_name=short,
            series=match['series'] if match else None,
            framebuffer_mb=_int(fields.get('framebuffer', '').rstrip('M')),
            max_per_gpu=_int(fields.get('max_instance')))


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None
