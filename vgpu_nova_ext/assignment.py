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
"""What the planner decides: each GPU's type and capacity, with findings.

The records :mod:`vgpu_nova_ext.mapping` returns (and, for a type on a
GPU, the most the GPU holds of it in its present mode).
"""

import dataclasses

from vgpu_nova_ext import findings
from vgpu_nova_ext.host import model
from vgpu_nova_ext.vendors import base as vendors_base


@dataclasses.dataclass(frozen=True)
class GPUAssignment:
    """One physical GPU serving one type."""

    gpu: model.PhysicalGPU
    type_id: str
    type_name: str | None
    type_info: vendors_base.TypeInfo
    resource_class: str
    capacity: int
    used: int
    """Devices of the type that exist on the GPU now."""
    parents: tuple[str, ...]
    """The parent devices in use (the GPU, or the VFs in scope)."""
    source: str
    """``device_addresses`` or ``default``."""
    max_unit: int = 1
    reserved: int = 0

    @property
    def max_per_gpu(self) -> int | None:
        """The most devices of the type the GPU holds, in its mode."""
        return most_per_gpu(self.gpu, self.type_info)


def most_per_gpu(gpu: model.PhysicalGPU,
                 info: vendors_base.TypeInfo) -> int | None:
    """The most devices of a type ``gpu`` holds as it is now.

    A MIG-backed type: its most per GPU instance times the GPU's instances
    of its profile (none while MIG is off). A time-sliced type: the
    vendor's maximum, in mixed-size mode where the GPU is in it.
    """
    if info.gpu_instance_profile is not None:
        if gpu.mig is None:
            return info.max_per_gpu     # the driver's own count (mdev)
        if not gpu.mig.enabled:
            return 0
        return (info.max_per_gi or 1) * gpu.mig.count(
            info.gpu_instance_profile)
    if gpu.mixed_size and info.max_per_gpu_mixed is not None:
        return info.max_per_gpu_mixed
    return info.max_per_gpu


@dataclasses.dataclass(frozen=True)
class Assignment:
    gpus: tuple[GPUAssignment, ...]
    problems: tuple[findings.Finding, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def errors(self) -> tuple[findings.Finding, ...]:
        return tuple(p for p in self.problems
                     if p.severity == findings.ERROR)

    @property
    def warnings(self) -> tuple[findings.Finding, ...]:
        return tuple(p for p in self.problems
                     if p.severity == findings.WARNING)
