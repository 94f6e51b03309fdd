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
"""What a simulated host profile describes: GPUs, models, types.

Frozen records read from a profile (:mod:`.parse`), used by the capacity
rules, the tree layout and the simulated kernel.
"""

import dataclasses

from vgpu_nova_ext.host import address
from vgpu_nova_ext.host import mig
from vgpu_nova_ext.host import model


TIME_SLICED = 'time-sliced'
SRIOV = 'sriov'
POOLED = 'pooled'
SHARING_MODES = (TIME_SLICED, SRIOV, POOLED)

#: What a host reboot leaves of a GPU's MIG mode (the field notes: sources
#: differ, so each model says which it follows).
MIG_MODE_KEPT = 'kept'
MIG_MODE_OFF = 'off'
MIG_MODE_AFTER_REBOOT = (MIG_MODE_KEPT, MIG_MODE_OFF)


@dataclasses.dataclass(frozen=True)
class TypeSpec:
    id: str
    name: str
    max_instance: int
    device_api: str = 'vfio-pci'
    framebuffer_mb: int | None = None
    num_heads: int | None = None
    frl_config: int | None = None
    max_resolution: str | None = None
    units: int = 1
    max_per_vm: int | None = None
    """What the simulated NVML says of the type's most per VM."""
    gpu_instance_profile: str | None = None
    """A MIG-backed type's GPU instance profile (``1g.18gb``)."""
    max_per_gi: int = 1
    """A MIG-backed type's most vGPUs on one GPU instance."""
    max_instance_mixed: int | None = None
    """The most per GPU in NVIDIA's mixed-size mode; None: max_instance."""

    def most(self, mixed_size: bool) -> int:
        """The most devices of this type one GPU holds, in its mode."""
        if mixed_size and self.max_instance_mixed is not None:
            return self.max_instance_mixed
        return self.max_instance

    @property
    def description(self) -> str | None:
        if self.framebuffer_mb is None:
            return None
        # The fields and their order are those of NVIDIA's vGPU manager.
        return ('num_heads=%s, frl_config=%s, framebuffer=%dM, '
                'max_resolution=%s, max_instance=%d' % (
                    self.num_heads, self.frl_config, self.framebuffer_mb,
                    self.max_resolution, self.max_instance))


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    sharing: str
    types: tuple[TypeSpec, ...]
    vendor_id: str = '0x10de'
    device_id: str = '0x0000'
    sriov_vfs: int = 0
    pool_units: int = 0
    vfio: bool = False
    """NVIDIA's vendor-specific VFIO instead of the mdev bus (sriov)."""
    mig_profiles: tuple[mig.GIProfile, ...] = ()
    mig_mode_after_reboot: str = MIG_MODE_OFF
    """The GPU instance profiles of a MIG-capable model."""

    def mig_profile_map(self) -> dict[str, mig.GIProfile]:
        return {p.name: p for p in self.mig_profiles}

    def type(self, type_id: str) -> TypeSpec | None:
        return next((t for t in self.types if t.id == type_id), None)


@dataclasses.dataclass(frozen=True)
class GPUSpec:
    model: ModelSpec
    address: str | None = None
    """PCI address; None for a virtual device."""
    virtual_path: str | None = None
    """Path below /sys/devices/virtual, for virtual devices."""
    sysfs_path: str | None = None
    """Path below /sys/devices, to mimic a real host's bridges."""
    mixed_size: bool = False
    """NVIDIA's mixed-size (heterogeneous) mode: ``nvidia-smi vgpu -shm 1``."""
    gpu_instances: tuple[tuple[str, int], ...] = ()
    """GPU instances carved before the host is opened (MIG mode on)."""

    @property
    def name(self) -> str:
        if self.virtual_path:
            return address.virtual_name(self.virtual_path)
        return address.libvirt_name(self.address)

    def vf_addresses(self) -> list[str]:
        """VF addresses as NVIDIA GPUs place them: offset 4, stride 1."""
        domain, bus, rest = self.address.split(':')
        slot = int(rest.split('.')[0], 16)
        out = []
        for index in range(self.model.sriov_vfs):
            routing_id = slot * 8 + 4 + index
            out.append('%s:%s:%02x.%d' % (domain, bus, routing_id // 8,
                                          routing_id % 8))
        return out


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    description: str
    gpus: tuple[GPUSpec, ...]
    mediated_devices: tuple[model.MediatedDevice, ...] = ()
    example_config: str | None = None
    source: str | None = None
    text: str = ''
    """The YAML it was read from (kept with a simulated host)."""
