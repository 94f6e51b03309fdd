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
"""The desired provider tree: assignment -> Placement providers. Pure.

One child provider per physical GPU under the compute node provider, named
as Nova names them (``<host>_pci_0000_84_00_0``, ``<host>_mtty_mtty``) so
that a deployment coming from Nova's in-tree support keeps its providers.
"""

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
import dataclasses
import uuid as uuidlib

import os_traits

from vgpu_nova_ext.host import model
from vgpu_nova_ext.host import vgpu_scheduler
from vgpu_nova_ext import mapping

# Fixed namespace of this project's uuid5 provider UUIDs: a provider created
# here keeps its UUID across restarts and re-creations.
# (uuid5 of the URL namespace and the project's name; never change it.)
PROVIDER_NAMESPACE = uuidlib.UUID('052ce518-510a-50d2-abbb-dcb09979cdbe')
TRAIT_PREFIX = 'VGPU_'
#: Traits named so are this project's, reserved to it: it adds them and
#: removes stale ones (a type no longer enabled). Every other trait of a
#: GPU provider is someone else's (an operator's CUSTOM_NVIDIA_11, as
#: Nova's vGPU guide has them put on providers) and is kept.
MANAGED_TRAIT_PREFIX = os_traits.CUSTOM_NAMESPACE + TRAIT_PREFIX


@dataclasses.dataclass(frozen=True)
class InventorySpec:
    resource_class: str
    total: int
    reserved: int = 0
    min_unit: int = 1
    max_unit: int = 1
    step_size: int = 1
    allocation_ratio: float = 1.0


@dataclasses.dataclass(frozen=True)
class ProviderSpec:
    """One GPU provider as it should be in Placement."""

    name: str
    uuid: str
    parent: str
    """Name of the parent provider (the compute node)."""
    device_address: str
    mdev_type: str
    type_name: str | None
    inventory: InventorySpec
    used: int
    traits: tuple[str, ...]

    @property
    def resource_class(self) -> str:
        return self.inventory.resource_class

    @property
    def total(self) -> int:
        return self.inventory.total


def provider_name(host: str, gpu_name: str) -> str:
    return '%s_%s' % (host, gpu_name)


def provider_uuid(name: str) -> str:
    return str(uuidlib.uuid5(PROVIDER_NAMESPACE, name))


def id_trait(type_id: str) -> str:
    """``nvidia-35`` -> ``CUSTOM_VGPU_NVIDIA_35``."""
    return os_traits.normalize_name(TRAIT_PREFIX + type_id)


def type_traits(type_id: str, short_name: str) -> tuple[str, ...]:
    """``CUSTOM_VGPU_NVIDIA_35`` and ``CUSTOM_VGPU_M60_2Q``."""
    return tuple(sorted({id_trait(type_id),
                         os_traits.normalize_name(TRAIT_PREFIX + short_name)}))


#: Traits of what NVIDIA's live migration needs the same on both hosts
#: (FIELD-NOTES: the vGPU manager version and the ECC setting), where NVML
#: says: CUSTOM_VGPU_MANAGER_550_90_07, CUSTOM_VGPU_ECC_ON or _OFF.
MANAGER_TRAIT_PREFIX = MANAGED_TRAIT_PREFIX + 'MANAGER_'
ECC_ON = MANAGED_TRAIT_PREFIX + 'ECC_ON'
ECC_OFF = MANAGED_TRAIT_PREFIX + 'ECC_OFF'


def host_traits(gpu: model.PhysicalGPU) -> tuple[str, ...]:
    """The manager version, ECC and vGPU scheduler traits NVML gives."""
    out = []
    if gpu.manager_version:
        out.append(os_traits.normalize_name(
            TRAIT_PREFIX + 'MANAGER_' + gpu.manager_version))
    if gpu.ecc is not None:
        out.append(ECC_ON if gpu.ecc else ECC_OFF)
    if gpu.vgpu_scheduler is not None:
        # The policy in force, not the declared one: a GPU waiting to be
        # idle is not yet what a flavor requiring it asks for.
        out.append(vgpu_scheduler.trait(gpu.vgpu_scheduler.policy))
    return tuple(out)


def manager_version_of(trait: str) -> str | None:
    """``CUSTOM_VGPU_MANAGER_550_90_07`` -> ``550.90.07``."""
    if not trait.startswith(MANAGER_TRAIT_PREFIX):
        return None
    return trait[len(MANAGER_TRAIT_PREFIX):].replace('_', '.')


def is_managed_trait(trait: str) -> bool:
    """A trait this project adds and removes on its GPU providers."""
    return trait.startswith(MANAGED_TRAIT_PREFIX) or \
        trait == os_traits.OWNER_NOVA


def merged_traits(current: Iterable[str], spec: 'ProviderSpec'
                  ) -> list[str]:
    """A GPU provider's traits: the spec's and every trait not managed.

    While the type's name is unknown (a full vendor-VFIO GPU whose name
    was never read) the managed traits it has stay too: a name trait is
    never dropped for want of a name.
    """
    keep = set(current) if spec.type_name is None else {
        t for t in current if not is_managed_trait(t)}
    return sorted(keep | set(spec.traits))


@dataclasses.dataclass(frozen=True)
class DesiredTree:
    """The GPU providers this host should have, and what had to give."""

    host: str
    providers: tuple[ProviderSpec, ...]
    problems: tuple[str, ...] = ()

    def by_name(self) -> dict[str, ProviderSpec]:
        return {p.name: p for p in self.providers}


def provider_tree(host: str, assignment: mapping.Assignment,
                  existing_uuids: Mapping[str, str] | None = None,
                  allocated: Mapping[str, int] | None = None,
                  owner_trait: bool = True) -> DesiredTree:
    """The GPU providers this host should have, in address order.

    :param existing_uuids: {provider name: uuid} of providers Placement
        already has: they keep their UUIDs (Nova's in-tree support made
        them with random ones, and names are unique in Placement).
    :param allocated: {provider name: units allocated} from Placement.
        A total never drops below it: Placement accepts such a total and
        only logs it, which would let the scheduler overcommit.

    :param owner_trait: mark the providers with ``OWNER_NOVA``, as Nova
        34 marks every provider it makes (older Nova does not).

    A GPU with nothing to offer and nothing allocated has no provider
    (Placement refuses a total of 0); it comes back with the same UUID.
    """
    existing_uuids = existing_uuids or {}
    allocated = allocated or {}
    providers = []
    problems = []
    for gpu in assignment.gpus:
        name = provider_name(host, gpu.gpu.name)
        in_use = allocated.get(name, 0)
        total = max(gpu.capacity, gpu.used, in_use)
        if in_use > gpu.capacity:
            problems.append(
                '%s: %d %s allocated in Placement but the GPU has room for '
                '%d; the total stays at %d until allocations are freed' % (
                    name, in_use, gpu.resource_class, gpu.capacity, total))
        if total == 0:
            continue
        reserved = min(gpu.reserved, total)
        providers.append(ProviderSpec(
            name=name, uuid=existing_uuids.get(name) or provider_uuid(name),
            parent=host, device_address=gpu.gpu.address,
            mdev_type=gpu.type_id, type_name=gpu.type_name,
            inventory=InventorySpec(
                resource_class=gpu.resource_class, total=total,
                reserved=reserved, max_unit=min(gpu.max_unit, total)),
            used=max(gpu.used, in_use),
            traits=((os_traits.OWNER_NOVA,) if owner_trait else ()) +
            type_traits(gpu.type_id, gpu.type_info.short_name) +
            host_traits(gpu.gpu)))
    return DesiredTree(host=host, providers=tuple(providers),
                       problems=tuple(problems))


def shrinking(draft: DesiredTree, current: Mapping[str, Mapping[str, int]]
              ) -> list[tuple[str, str]]:
    """(provider name, resource class) whose total would go down.

    ``current`` is {provider name: {resource class: total}} as Placement
    has it. Only these need their usage read to floor the new total: no
    other provider can fall below what is allocated on it.
    """
    wanted = draft.by_name()
    out = []
    for name, totals in sorted(current.items()):
        if not name.startswith(draft.host + '_'):
            continue
        spec = wanted.get(name)
        for rc, total in sorted(totals.items()):
            new = spec.total if spec and spec.resource_class == rc else 0
            if total > new:
                out.append((name, rc))
    return out


def usage_floors(draft: DesiredTree,
                 current: Mapping[str, Mapping[str, int]],
                 usage: Callable[[str, str], int]) -> dict[str, int]:
    """What is allocated on each provider whose total would go down.

    The one floor rule, whoever writes the tree (the driver, the
    publisher, the audit's view of it): a GPU provider never reports less
    than its consumers hold, nor vanishes under them. ``usage(name, rc)``
    reads Placement, and is asked only for those providers (rarely:
    devices lost or capacity lowered). Pass the result to
    :func:`provider_tree` as ``allocated``.
    """
    return {name: usage(name, rc) for name, rc in shrinking(draft, current)}
