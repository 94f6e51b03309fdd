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
"""NVIDIA's vGPU scheduler of one physical GPU: its policy and time slice.

Time-sliced vGPUs on a GPU share it under a scheduler (NVIDIA vGPU user
guide, "Changing Scheduling Behavior for Time-Sliced vGPUs"): best effort
(the default), equal share or fixed share, the last two optionally with a
time slice. NVML reads and sets it (nvmlDeviceGetVgpuSchedulerState,
nvmlDeviceSetVgpuSchedulerState; the policy numbers are nvml.h's
NVML_VGPU_SCHEDULER_POLICY_*, the time slice in nanoseconds), and sets it
only while no VM runs on the GPU; a driver reload forgets it.
"""

import dataclasses
import enum

import os_traits


class Policy(enum.StrEnum):
    BEST_EFFORT = 'best_effort'
    EQUAL_SHARE = 'equal_share'
    FIXED_SHARE = 'fixed_share'


#: nvml.h's NVML_VGPU_SCHEDULER_POLICY_* numbers.
NVML_NUMBERS = {Policy.BEST_EFFORT: 1, Policy.EQUAL_SHARE: 2,
                Policy.FIXED_SHARE: 3}
#: NVIDIA's documented time slice range for equal and fixed share, in ms
#: (vGPU user guide, the RmPVMRL registry key: 1 to 30 ms).
TIMESLICE_MS_RANGE = (1, 30)
_NS_PER_MS = 1_000_000
TRAIT_PREFIX = os_traits.CUSTOM_NAMESPACE + 'VGPU_SCHED_'


@dataclasses.dataclass(frozen=True)
class SchedulerState:
    """A GPU's vGPU scheduler, as NVML reads it or nova.conf declares it."""

    policy: Policy
    timeslice_ms: int | None = None
    """Equal and fixed share only; None: the driver's default."""

    def words(self) -> str:
        if self.timeslice_ms is None:
            return str(self.policy)
        return '%s, %d ms time slice' % (self.policy, self.timeslice_ms)

    def argument(self) -> str:
        """The privileged step's argument, ``<policy>:<ms or 0>``."""
        return '%s:%d' % (self.policy, self.timeslice_ms or 0)

    def satisfied_by(self, actual: 'SchedulerState | None') -> bool:
        """Whether ``actual`` is what this declares (no time slice: any)."""
        return actual is not None and actual.policy == self.policy and (
            self.timeslice_ms is None
            or actual.timeslice_ms == self.timeslice_ms)


def trait(policy: Policy) -> str:
    """``CUSTOM_VGPU_SCHED_FIXED_SHARE``."""
    return TRAIT_PREFIX + policy.upper()


def from_nvml(number: int, timeslice_ns: int) -> SchedulerState | None:
    """NVML's reading; None for a policy number it does not define here."""
    policy = next((p for p, n in NVML_NUMBERS.items() if n == number), None)
    if policy is None:
        return None
    ms = timeslice_ns // _NS_PER_MS if timeslice_ns else None
    return SchedulerState(policy, ms if policy != Policy.BEST_EFFORT
                          and ms else None)


def parse_argument(argument) -> SchedulerState:
    """``<policy>:<ms>`` from a caller that may not be trusted.

    :raises ValueError: naming the value and what is expected.
    """
    policy, _, ms = argument.partition(':') if isinstance(
        argument, str) else ('', '', '')
    low, high = TIMESLICE_MS_RANGE
    if policy not in set(Policy) or not (ms.isascii() and ms.isdigit()):
        raise ValueError(
            'vGPU scheduler %r is not <policy>:<time slice ms> with a '
            'policy of %s and 0 (the default) or %d to %d ms' % (
                argument, ', '.join(Policy), low, high))
    state = SchedulerState(Policy(policy), int(ms) or None)
    if state.timeslice_ms is not None and (
            state.policy == Policy.BEST_EFFORT
            or not low <= state.timeslice_ms <= high):
        raise ValueError(
            'vGPU scheduler %r: a time slice is for equal_share and '
            'fixed_share only, from %d to %d ms' % (argument, low, high))
    return state


def nanoseconds(state: SchedulerState) -> int:
    """The time slice as NVML takes it (0: the driver's default)."""
    return (state.timeslice_ms or 0) * _NS_PER_MS
