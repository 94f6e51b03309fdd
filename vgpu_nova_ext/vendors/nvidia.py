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
from vgpu_nova_ext.vendors import types as vendor_types

PCI_VENDOR_ID = '0x10de'
_PREFIXES = ('GRID ', 'NVIDIA ')
_SERIES_RE = re.compile(r'-(?:\d+-)?\d+(?P<series>[A-Z]+)\d*$')
# <board>-[<MIG slices>-]<framebuffer GB><series>; a board name may hold
# spaces ("RTX Pro 6000 Blackwell DC-24Q").
_NAME_RE = re.compile(r'^(?P<board>[A-Za-z0-9][A-Za-z0-9 ]*?)-'
                      r'(?:(?P<slices>\d+)-)?(?P<gb>\d+)(?P<series>[A-Z]+)'
                      r'\d*$')
# Framebuffer of one physical GPU of each board, in GB, for the hosts
# where the driver publishes no max_instance (NVIDIA's vendor-specific
# VFIO has no description file): the most vGPUs of a type one GPU holds
# is this divided by the type's framebuffer, which never exceeds NVIDIA's
# published maximum except where _PUBLISHED_MAX says otherwise. Keys in
# upper case.
BOARD_FRAMEBUFFER_GB = {
    'M6': 8, 'M10': 8, 'M60': 8, 'P4': 8, 'P6': 16, 'P40': 24,
    'P100': 16, 'P100C': 12, 'P100X': 16, 'T4': 16, 'V100': 16,
    'V100D': 32, 'V100DX': 32, 'V100L': 16, 'V100S': 32, 'V100X': 16,
    'RTX6000': 24, 'RTX8000': 48, 'A2': 16, 'A10': 24, 'A16': 16,
    'A30': 24, 'A40': 48, 'A100': 40, 'A100X': 40, 'A100D': 80,
    'A100DX': 80, 'RTXA5000': 24, 'RTXA5500': 24, 'RTXA6000': 48,
    'L4': 24, 'L40': 48, 'L40S': 48, 'H100': 80, 'H100XM': 80,
    'H800': 80, 'H800XM': 80, 'H200': 141, 'H200X': 141,
    'RTX PRO 6000 BLACKWELL DC': 96,
}
# NVIDIA's published per-GPU maximum where the division above gives more
# (the "8" of H200X-8C is a rounded framebuffer): "Hopper Architecture
# vGPU Types", NVIDIA AI Enterprise documentation.
_PUBLISHED_MAX = {'H200X-8C': 16, 'H200-8C': 16,
                  # ... and where it gives less (16 GB of 80 GB: 6, not 5).
                  'H100-16C': 6, 'H100XM-16C': 6}
# Boards whose published mixed-size maximums equal the equal-size ones
# (NVIDIA's type tables for the H200 and the RTX PRO 6000 Blackwell). On
# other boards the mixed-size maximum is taken as the largest power of two
# not above the equal-size one: what NVIDIA publishes for every H100 and
# H800 type, and a lower bound on every table read (so never a capacity
# the GPU cannot give).
_MIXED_AS_EQUAL = ('H200', 'H200X', 'RTX PRO 6000 BLACKWELL DC')
# Boards whose MIG-backed types are time-sliced on their GPU instance:
# {board: {compute slices: the GPU instance's memory in GB}}. There a
# type's name gives its own framebuffer, not its instance's (DC-2-8C runs
# on the 2-slice instance, four to one instance), so the profile is the
# board's instance of that many slices and the most per instance its
# memory divided by the type's (NVIDIA's Blackwell vGPU type tables for
# the RTX PRO 4500; the RTX PRO 6000's instances from NVIDIA's MIG user
# guide, "Supported MIG Profiles": 1g.24gb x4, 2g.48gb x2, 4g.96gb x1).
# NVML's answer (nvmlVgpuTypeGetMaxInstancesPerGpuInstance) wins where
# the host has it.
_TIME_SLICED_GI_GB = {
    'RTX PRO 6000 BLACKWELL DC': {1: 24, 2: 48, 4: 96},
}
# Maxwell (M6, M10, M60) and Pascal (P4, P6, P40, P100...) boards.
_OLD_BOARD_RE = re.compile(r'^[MP]\d')
_COMBINING_SERIES = ('Q', 'C')
_FIELD_RE = re.compile(r'\s*([a-z_]+)\s*=\s*([^,]*)')


def parse_description(description: str | None) -> dict[str, str]:
    """``key=value, ...`` -> {key: value}; unknown text is ignored."""
    if not description:
        return {}
    return {key: value.strip()
            for key, value in _FIELD_RE.findall(description)}


class NvidiaVendor(base.VendorPlugin):

    priority = 10
    name = 'nvidia'

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
        framebuffer = _int(fields.get('framebuffer', '').rstrip('M'))
        max_per_gpu = _int(fields.get('max_instance'))
        named = _NAME_RE.match(short)
        board = named['board'].upper() if named else None
        if named and framebuffer is None and int(named['gb']):
            framebuffer = int(named['gb']) * 1024
        if named and max_per_gpu is None and framebuffer and \
                board in BOARD_FRAMEBUFFER_GB:
            max_per_gpu = _PUBLISHED_MAX.get(short.upper(), (
                BOARD_FRAMEBUFFER_GB[board] * 1024 // framebuffer))
        gi_profile = per_gi = None
        if named and named['slices']:
            # A100-2-10C runs on a 2g.10gb instance, one per instance on
            # Ampere and Hopper (NVIDIA's MIG-backed type tables). Only the
            # GPU instances carved say how many a GPU holds.
            slices, gb = int(named['slices']), int(named['gb'])
            gi_gb = _TIME_SLICED_GI_GB.get(board, {}).get(slices)
            if gi_gb and gb:
                gi_profile, per_gi = '%dg.%dgb' % (slices, gi_gb), max(
                    gi_gb // gb, 1)
            else:
                gi_profile, per_gi = '%dg.%dgb' % (slices, gb), 1
            max_per_gpu = _int(fields.get('max_instance'))
        mixed = None
        if max_per_gpu:
            mixed = (max_per_gpu if board in _MIXED_AS_EQUAL
                     else 1 << (max_per_gpu.bit_length() - 1))
        return base.TypeInfo(
            short_name=short,
            series=match['series'] if match else None,
            framebuffer_mb=framebuffer, max_per_gpu=max_per_gpu,
            board=named['board'] if named else None,
            max_per_gpu_mixed=mixed, gpu_instance_profile=gi_profile,
            max_per_gi=per_gi)

    def combination_problem(self, vgpus: list[base.TypeInfo]) -> str | None:
        """NVIDIA's rules for several vGPUs in one VM.

        All of one board and series ("A40-48C and A40-16C ... but not an
        A30-8C and an A16-8C"); on Pascal and older boards only the
        full-framebuffer types (one per GPU) combine; on Volta and later
        the Q and C series do (NVIDIA AI Enterprise docs, "multi-vgpu";
        vGPU R525 release notes). Unknown boards are let through.
        """
        if len(vgpus) < 2:
            return None
        names = ', '.join(sorted(v.short_name for v in vgpus))
        if len({(v.board, v.series) for v in vgpus}) > 1:
            return ('NVIDIA vGPU: all vGPUs of one VM must be of one board '
                    'and one series; asked: %s' % names)
        first = vgpus[0]
        if first.board is None:
            return None
        if _OLD_BOARD_RE.match(first.board):
            partial = sorted({v.short_name for v in vgpus
                              if v.max_per_gpu != 1})
            if partial:
                return ('NVIDIA vGPU: on %s (Pascal and older) only '
                        'full-framebuffer types combine in one VM; %s is '
                        'not one (asked: %s)' % (first.board,
                                                 ', '.join(partial), names))
            return None
        if first.series not in _COMBINING_SERIES:
            return ('NVIDIA vGPU: only Q and C series vGPUs combine in one '
                    'VM; %s is %s-series (asked: %s)' % (
                        first.short_name, first.series, names))
        return None

    #: NVIDIA vGPU user guide, "Setting vGPU Plugin Parameters on a Linux
    #: with KVM Hypervisor", and the sections on unified memory and the
    #: CUDA developer tools (debuggers, profilers): each is off unless set.
    vgpu_params = {
        'enable_uvm': ('0', '1'),
        'enable_debugging': ('0', '1'),
        'enable_profiling': ('0', '1'),
        'frame_rate_limiter': ('0', '1'),
    }
    #: What needs CUDA in the guest: unified memory and the CUDA tools run
    #: on Q- and C-series vGPUs (the compute-capable profiles) of Pascal and
    #: later boards, not on B- and A-series ones nor on Maxwell (same
    #: sections of the guide). The frame rate limiter applies to all.
    _CUDA_PARAMS = ('enable_uvm', 'enable_debugging', 'enable_profiling')
    _CUDA_SERIES = ('Q', 'C')

    def vgpu_params_problem(self, info, params):
        asked = sorted(n for n, v in params if n in self._CUDA_PARAMS
                       and v == '1')
        if not asked:
            return None
        if info.series not in self._CUDA_SERIES:
            return ('%s need a Q- or C-series NVIDIA vGPU; %s is %s' % (
                ', '.join(asked), info.short_name,
                '%s-series' % info.series if info.series
                else 'of an unknown series'))
        if info.board and re.match(r'^M\d', info.board):
            return ('%s need a Pascal or later board; %s is a Maxwell '
                    '(%s) vGPU' % (', '.join(asked), info.short_name,
                                   info.board))
        return None

    def guest_licensing(self, settings, type_id: str | None, os_type: str):
        from vgpu_nova_ext.vendors import nvidia_licensing
        if os_type == vendor_types.WINDOWS:
            return nvidia_licensing.windows(settings, type_id)
        return nvidia_licensing.linux(settings, type_id)

    def operator_licensing(self, found, metadata):
        # NVIDIA's GPU Operator (Kubernetes workers with a vGPU).
        from vgpu_nova_ext.vendors import nvidia_gpu_operator
        namespace = nvidia_gpu_operator.requested_namespace(metadata)
        if namespace is None:
            return None
        return nvidia_gpu_operator.guest_file(found, namespace)


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None
