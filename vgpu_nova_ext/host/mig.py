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
"""Multi-Instance GPU: GPU instance profiles, placements, layouts.

A MIG-capable GPU's memory is 8 slices. A GPU instance (GI) of a profile
(``1g.18gb``, ``3g.71gb`` ...) takes ``size`` consecutive slices starting at
one of the profile's placements (``nvidia-smi mig -lgipp``). A layout is
what the operator asks for in mig-parted's words, ``{profile: count}``;
:func:`fit` places it or says why it cannot be placed.
"""

import dataclasses
import re

#: Memory slices of a MIG-capable GPU (A100, A30 has 4, H100, H200, B200).
SLICES = 8
_PROFILE_RE = re.compile(r'^(?P<slices>\d+)g\.(?P<gb>\d+)gb$')


@dataclasses.dataclass(frozen=True)
class GIProfile:
    """One GPU instance profile of a GPU model."""

    name: str
    """As nvidia-smi and mig-parted write it: ``1g.18gb``."""
    id: int
    """nvidia-smi's profile id (``-cgi`` takes it or the name)."""
    size: int
    """Memory slices it takes."""
    placements: tuple[int, ...]
    """The slices it may start at."""


@dataclasses.dataclass(frozen=True)
class GpuInstance:
    id: int
    profile: str
    start: int


@dataclasses.dataclass(frozen=True)
class MigState:
    """A GPU's MIG mode and GPU instances, as the driver reports them."""

    enabled: bool
    instances: tuple[GpuInstance, ...] = ()

    def count(self, profile: str) -> int:
        return sum(1 for gi in self.instances if gi.profile == profile)

    def layout(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for gi in self.instances:
            out[gi.profile] = out.get(gi.profile, 0) + 1
        return out


class LayoutError(ValueError):
    """A layout that does not fit the GPU; the message says why."""


def is_profile_name(name: str) -> bool:
    return bool(_PROFILE_RE.match(name))


def fit(profiles: dict[str, GIProfile], wanted: dict[str, int]
        ) -> list[tuple[str, int]]:
    """Where each GPU instance of ``wanted`` goes on an empty GPU.

    :returns: (profile, start slice) in creation order: larger instances
        first, each at its first free placement, as nvidia-smi places them.
    :raises LayoutError: naming the profile, the sizes and placements, and
        what remains free.
    """
    unknown = sorted(set(wanted) - set(profiles))
    if unknown:
        raise LayoutError(
            'GPU instance profile %s is not one this GPU has (it has %s)' % (
                ', '.join(unknown), ', '.join(
                    '%s (%d slice(s), at most %d)' % (
                        p.name, p.size, len(p.placements))
                    for p in sorted(profiles.values(),
                                    key=lambda p: (-p.size, p.name)))))
    used = [False] * SLICES
    placed = []
    order = sorted(wanted.items(),
                   key=lambda kv: (-profiles[kv[0]].size, kv[0]))
    for name, count in order:
        profile = profiles[name]
        for _ in range(count):
            start = next((s for s in profile.placements
                          if not any(used[s:s + profile.size])), None)
            if start is None:
                done = sum(1 for n, _ in placed if n == name)
                free = [i for i, taken in enumerate(used) if not taken]
                raise LayoutError(
                    '%s does not fit: a %s instance takes %d of the GPU\'s '
                    '%d memory slices and may start at slice %s; %d fit '
                    'beside the larger instances, the layout asks %d '
                    '(free slices: %s)' % (
                        words(wanted), name, profile.size, SLICES,
                        '/'.join(str(p) for p in profile.placements),
                        done, count,
                        ', '.join(str(i) for i in free) or 'none'))
            for i in range(start, start + profile.size):
                used[i] = True
            placed.append((name, start))
    return placed


def parse_layout(text: str) -> dict[str, int]:
    """``1g.18gb:7, 3g.71gb:1`` -> {profile: count}; ValueError else."""
    out: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(','))):
        name, sep, count = item.partition(':')
        name = name.strip()
        if not sep or not is_profile_name(name):
            raise ValueError('%r is not <profile>:<count> with a profile '
                             'named as nvidia-smi names them (1g.18gb)'
                             % item)
        try:
            number = int(count)
        except ValueError:
            number = 0
        if number < 1:
            raise ValueError('%r: the count must be a whole number >= 1'
                             % item)
        out[name] = out.get(name, 0) + number
    return out


def words(layout: dict[str, int]) -> str:
    """{profile: count} in mig-parted's words."""
    return ', '.join('%s: %d' % kv for kv in sorted(layout.items()))
