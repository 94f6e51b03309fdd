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
"""NVIDIA's vendor-specific VFIO interface (vGPU 17+, kernel 6.8+).

There is no mdev bus. Each GPU is an SR-IOV physical function bound to the
``nvidia`` driver; a vGPU is made on one of its virtual functions by
writing a numeric type id to the VF's ``nvidia/current_vgpu_type`` (``0``
frees it). ``nvidia/creatable_vgpu_types`` lists the types the VF can
take now, one ``<id> : <name>`` a line (a header line may come first)::

    ID    : vGPU Name
    557   : NVIDIA A40-1Q
    558   : NVIDIA A40-2Q

Type ids are presented as ``nvidia-<id>`` everywhere else, so that
configuration and traits read the same on every backend. The guest gets
the VF itself as a PCI hostdev with ``managed='no'``.
"""

import os
import re

NVIDIA_DIR = 'nvidia'
CREATABLE = 'creatable_vgpu_types'
CURRENT = 'current_vgpu_type'
TYPE_PREFIX = 'nvidia-'
_LINE_RE = re.compile(r'^\s*(\d+)\s*:\s*(.*?)\s*$')


def type_id(number: int | str) -> str:
    """``558`` -> ``nvidia-558``."""
    return '%s%s' % (TYPE_PREFIX, int(number))


def type_number(type_id_: str) -> int | None:
    """``nvidia-558`` -> 558; None for a type of another kind."""
    if not type_id_.startswith(TYPE_PREFIX):
        return None
    try:
        return int(type_id_[len(TYPE_PREFIX):])
    except ValueError:
        return None


def parse_creatable(text: str) -> list[tuple[int, str]]:
    """The (id, name) pairs of a ``creatable_vgpu_types`` file."""
    out = []
    for line in text.splitlines():
        match = _LINE_RE.match(line)
        if match:
            out.append((int(match.group(1)), match.group(2)))
    return out


def format_creatable(types: list[tuple[int, str]]) -> str:
    lines = ['ID    : vGPU Name']
    lines += ['%-5d : %s' % (number, name) for number, name in types]
    return '\n'.join(lines) + '\n'


def is_vfio_vf(device_dir: str) -> bool:
    return os.path.exists(os.path.join(device_dir, NVIDIA_DIR, CREATABLE))
