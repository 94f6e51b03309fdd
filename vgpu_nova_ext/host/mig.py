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
_PROFILE_RE = re.compile(r'^(?P<slices>\d+)g\.(?P<gb>\d+)gb\Z')


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

    A search over the profiles' placements: every layout the GPU's
    placement table allows is placed, whatever order a first-fit would
    try (``4g.71gb:1, 3g.71gb:1`` is 4g at slice 0 and 3g at slice 4).

    :returns: (profile, start slice) in creation order: larger instances
        first (NVIDIA's advice), each profile's at increasing slices.
    :raises LayoutError: naming the profile that does not fit, its size
        and placements, how many fit beside the larger instances, and what
        remains free.
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
    order = sorted(wanted.items(), key=lambda kv: _larger_first(
        profiles[kv[0]]))
    placed = _place(profiles, [n for n, count in order
                               for _ in range(count)])
    if placed is not None:
        return placed
    # The first profile (larger first) that cannot have its count beside
    # the larger ones is the one to name.
    before: list[str] = []
    for name, count in order:
        best = max(n for n in range(count + 1)
                   if _place(profiles, before + [name] * n) is not None)
        if best < count:
            profile = profiles[name]
            taken = _place(profiles, before + [name] * best) or []
            used = {i for n, s in taken
                    for i in range(s, s + profiles[n].size)}
            raise LayoutError(
                '%s does not fit: a %s instance takes %d of the GPU\'s %d '
                'memory slices and may start at slice %s; %d fit beside '
                'the larger instances, the layout asks %d (free slices: %s)'
                % (words(wanted), name, profile.size, SLICES,
                   '/'.join(str(p) for p in profile.placements), best,
                   count, ', '.join(str(i) for i in range(SLICES)
                                    if i not in used) or 'none'))
        before += [name] * count
    raise AssertionError('a layout that does not fit names no profile')


def _larger_first(profile: GIProfile) -> tuple:
    """Memory slices, then compute slices (``4g`` before ``3g``)."""
    match = _PROFILE_RE.match(profile.name)
    compute = int(match.group('slices')) if match else 0
    return (-profile.size, -compute, profile.name)


def _place(profiles: dict[str, GIProfile], names: list[str],
           used: int = 0, first: int = 0) -> list[tuple[str, int]] | None:
    """``names`` (larger first) placed on slices not in ``used``, or None.

    :param used: bit i set: slice i is taken.
    :param first: the lowest start for ``names[0]`` (instances of one
        profile take increasing starts: the same layout is not tried in
        each of its orders).
    """
    if not names:
        return []
    name, rest = names[0], names[1:]
    profile = profiles[name]
    for start in profile.placements:
        mask = ((1 << profile.size) - 1) << start
        if start < first or start + profile.size > SLICES or used & mask:
            continue
        found = _place(profiles, rest, used | mask,
                       start + 1 if rest and rest[0] == name else 0)
        if found is not None:
            return [(name, start)] + found
    return None


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
