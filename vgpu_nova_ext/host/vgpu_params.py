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
"""A vGPU's plugin parameters: NVIDIA's ``nvidia/vgpu_params`` attribute.

NVIDIA's vGPU manager reads per-vGPU parameters from the device's
``nvidia/vgpu_params`` (an mdev's, or a vendor-specific VFIO VF's) when
the guest starts: ``name=value`` pairs separated by commas (NVIDIA vGPU
user guide, "Setting vGPU Plugin Parameters on a Linux with KVM
Hypervisor"); an empty write clears them. The driver refuses a write
while a guest uses the device.
"""

import re

ATTRIBUTE = 'vgpu_params'
_PAIR_RE = re.compile(r'^[a-z][a-z0-9_]{0,63}=[a-z0-9_.]{1,32}$')
#: Longer than any set of parameters the plugins allow.
MAX_LENGTH = 512


def text(params: tuple[tuple[str, str], ...]) -> str:
    """The attribute's content: sorted ``name=value`` pairs, comma joined."""
    return ','.join('%s=%s' % kv for kv in sorted(params))


def parse(content) -> tuple[tuple[str, str], ...]:
    """The pairs of an attribute's content, from a caller not trusted.

    :raises ValueError: naming the content and the form expected.
    """
    if not isinstance(content, str) or len(content) > MAX_LENGTH:
        raise ValueError('vGPU parameters %r are not text of at most %d '
                         'characters' % (str(content)[:80], MAX_LENGTH))
    stripped = content.strip()
    if not stripped:
        return ()
    pairs = [p.strip() for p in stripped.split(',')]
    if stripped != content.strip('\n') or not all(
            _PAIR_RE.match(p) for p in pairs):
        raise ValueError(
            'vGPU parameters %r are not name=value pairs separated by '
            'commas (names: lower-case letters, digits and _; values: '
            'lower-case letters, digits, _ and .)' % content[:80])
    names = [p.split('=', 1)[0] for p in pairs]
    if len(set(names)) != len(names):
        raise ValueError('vGPU parameters %r name one parameter twice'
                         % content[:80])
    return tuple(sorted(tuple(p.split('=', 1)) for p in pairs))
