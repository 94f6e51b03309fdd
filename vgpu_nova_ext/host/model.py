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
"""The host as data: what a backend's ``scan()`` returns.

These frozen dataclasses are the only thing the planning modules (mapping,
inventory) know of the host, whichever backend read it.
"""

import dataclasses
import re

from vgpu_nova_ext.host import mig as mig_mod
from vgpu_nova_ext.host import vgpu_scheduler as vgpu_scheduler_mod

#: An mdev type id as the kernel names its directory under
#: ``mdev_supported_types`` (``nvidia-35``, ``i915-GVTg_V5_4``,
#: ``mtty-1``): what nova.conf may enable, a simulated profile may declare
#: and a host write may name. Never "/" nor a leading "."; ``\Z``, not
#: ``$``, which lets a trailing newline through.
TYPE_ID_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z')


@dataclasses.dataclass(frozen=True)
class VGPUType:
    """A mediated device type as one parent device offers it."""

    id: str
    """The sysfs type id, as in ``enabled_mdev_types`` (``nvidia-35``)."""
    name: str | None
    """The human name from the type's ``name`` file (``GRID M60-2Q``)."""
    available_instances: int
    device_api: str
    description: str | None = None
    max_per_vm: int | None = None
    """Most of the type in one guest, where the driver says (NVML)."""
    gpu_instance_profile: str | None = None
    """The GPU instance profile a MIG-backed type runs on, where the driver
    says (NVML); None: time-sliced, or not known."""
    max_per_gi: int | None = None
    """Most of a MIG-backed type on one GPU instance, where the driver says
    (NVML); more than one where the type is time-sliced on the instance
    (Blackwell)."""


@dataclasses.dataclass(frozen=True)
class ParentDevice:
    """A device that mediated devices are created on.

    For a time-sliced GPU it is the GPU itself; for an SR-IOV GPU each of
    its virtual functions is one; for the mtty sample it is a virtual device.
    """

    name: str
    """libvirt's node device name (``pci_0000_84_00_0``, ``mtty_mtty``)."""
    address: str
    """``0000:84:00.0``; for a virtual parent, the same as ``name``."""
    types: tuple[VGPUType, ...]

    def type(self, type_id: str) -> VGPUType | None:
        for vgpu_type in self.types:
            if vgpu_type.id == type_id:
                return vgpu_type
        return None


@dataclasses.dataclass(frozen=True)
class ManagerVgpu:
    """A vGPU NVIDIA's vGPU manager runs on a GPU (NVML's active vGPUs).

    The manager's own view: it can hold a vGPU the kernel no longer shows
    (a stale vGPU after its mdev was removed, a leftover
    ``nvidia-vgpu-mgr``), which ``nvidia-smi vgpu`` lists.
    """

    vgpu_uuid: str
    """NVML's vGPU instance UUID."""
    device_id: str | None
    """The mdev UUID it serves; None where NVML gives none (vendor-VFIO)."""
    type_id: str
    vm_id: str | None
    """The VM NVML names (KVM: the domain's UUID, Nova's instance)."""


@dataclasses.dataclass(frozen=True)
class PhysicalGPU:
    """One physical GPU (or virtual mdev-capable device) of the host.

    The unit that a Placement child provider stands for.
    """

    name: str
    """libvirt name of the physical device; of the PF for SR-IOV GPUs."""
    address: str
    vendor_id: str | None
    device_id: str | None
    parents: tuple[ParentDevice, ...]
    virtual: bool = False
    sriov_total_vfs: int = 0
    """How many VFs the device can have (0: no SR-IOV)."""
    sriov_num_vfs: int = 0
    """How many VFs are enabled now."""
    mixed_size: bool | None = None
    """NVIDIA's mixed-size (heterogeneous) mode, where NVML says; None:
    not known (no NVML, or not an NVIDIA GPU)."""
    mig: mig_mod.MigState | None = None
    """MIG mode and GPU instances, where the driver says; None: not a
    MIG-capable GPU, or not known."""
    gpu_instance_profiles: tuple[mig_mod.GIProfile, ...] = ()
    """The GPU instance profiles a MIG-capable GPU offers."""
    driver: str | None = None
    """The kernel driver bound to it (``nvidia``; ``vfio-pci`` for a GPU
    passed through whole); None: none, or not read."""
    manager_vgpus: tuple[ManagerVgpu, ...] | None = None
    """The vGPUs NVIDIA's manager runs on it, where NVML says; None: not
    known (no NVML)."""
    manager_version: str | None = None
    """NVIDIA's vGPU manager (host driver) version, where NVML says."""
    ecc: bool | None = None
    """ECC mode (current), where NVML says; None: not known, or a board
    without ECC."""
    vgpu_scheduler: vgpu_scheduler_mod.SchedulerState | None = None
    """NVIDIA's vGPU scheduler in force, where NVML says; None: not known."""

    @property
    def sriov(self) -> bool:
        return self.sriov_total_vfs > 0

    @property
    def supported_type_ids(self) -> tuple[str, ...]:
        ids = {t.id for parent in self.parents for t in parent.types}
        return tuple(sorted(ids, key=_natural_key))

    def type_name(self, type_id: str) -> str | None:
        for parent in self.parents:
            found = parent.type(type_id)
            if found is not None and found.name:
                return found.name
        return None

    def type_max_per_vm(self, type_id: str) -> int | None:
        return self._type_fact(type_id, 'max_per_vm')

    def type_mig(self, type_id: str) -> tuple[str | None, int | None]:
        """(GPU instance profile, most per instance) where NVML says."""
        return (self._type_fact(type_id, 'gpu_instance_profile'),
                self._type_fact(type_id, 'max_per_gi'))

    def _type_fact(self, type_id: str, field: str):
        for parent in self.parents:
            found = parent.type(type_id)
            if found is not None and getattr(found, field) is not None:
                return getattr(found, field)
        return None

    def type_description(self, type_id: str) -> str | None:
        for parent in self.parents:
            found = parent.type(type_id)
            if found is not None and found.description:
                return found.description
        return None


MDEV = 'mdev'
VF = 'vf'


@dataclasses.dataclass(frozen=True)
class MediatedDevice:
    """A vGPU device that exists on the host now.

    An mdev (``kind`` ``mdev``) is named by its UUID. With NVIDIA's
    vendor-specific VFIO (``kind`` ``vf``) the device is a virtual function
    given a vGPU type, named by the VF's PCI address.
    """

    uuid: str
    parent: str
    """Name of the parent device it was created on."""
    type_id: str
    kind: str = MDEV
    gpu_instance: int | None = None
    """A VF's ``nvidia/gpu_instance_id``: the GPU instance a MIG-backed
    vGPU landed on (meaningful on a GPU in MIG mode)."""

    @property
    def device_id(self) -> str:
        return self.uuid


@dataclasses.dataclass(frozen=True)
class HostSnapshot:
    """Everything a backend saw in one scan."""

    gpus: tuple[PhysicalGPU, ...]
    mediated_devices: tuple[MediatedDevice, ...] = ()

    def gpu_of_parent(self, parent_name: str) -> PhysicalGPU | None:
        for gpu in self.gpus:
            if any(p.name == parent_name for p in gpu.parents):
                return gpu
        return None

    @property
    def offered_type_ids(self) -> tuple[str, ...]:
        ids = {t for gpu in self.gpus for t in gpu.supported_type_ids}
        return tuple(sorted(ids, key=_natural_key))

    def type_names(self) -> dict[tuple[str, str], tuple[str, str | None]]:
        """{(GPU name, type id): (name, description)} of the named types."""
        found = {}
        for gpu in self.gpus:
            for parent in gpu.parents:
                for vgpu_type in parent.types:
                    if vgpu_type.name:
                        found.setdefault((gpu.name, vgpu_type.id),
                                         (vgpu_type.name,
                                          vgpu_type.description))
        return found

    def with_type_names(self, known: dict[tuple[str, str],
                                          tuple[str, str | None]]
                        ) -> 'HostSnapshot':
        """This snapshot with a name for each type that shows none.

        NVIDIA's vendor-specific VFIO stops listing a type (and so its
        name) on a GPU that can take no more of it; ``known`` holds what
        the GPU said before, keyed by GPU, as type ids are unique per
        board only.
        """
        if not any(not t.name and (gpu.name, t.id) in known
                   for gpu in self.gpus for parent in gpu.parents
                   for t in parent.types):
            return self  # the common case: every type names itself

        def named(gpu: PhysicalGPU, vgpu_type: VGPUType) -> VGPUType:
            if vgpu_type.name or (gpu.name, vgpu_type.id) not in known:
                return vgpu_type
            name, description = known[(gpu.name, vgpu_type.id)]
            return dataclasses.replace(
                vgpu_type, name=name,
                description=vgpu_type.description or description)

        gpus = tuple(dataclasses.replace(gpu, parents=tuple(
            dataclasses.replace(parent, types=tuple(
                named(gpu, t) for t in parent.types))
            for parent in gpu.parents)) for gpu in self.gpus)
        return dataclasses.replace(self, gpus=gpus)


def _natural_key(text: str) -> tuple:
    """Sort ``nvidia-9`` before ``nvidia-10``."""
    head, _, tail = text.rpartition('-')
    return (head, int(tail)) if tail.isdigit() else (text, -1)
