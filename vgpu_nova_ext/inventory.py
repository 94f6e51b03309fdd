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

import dataclasses
import uuid as uuidlib

import os_traits

from vgpu_nova_ext import mapping

# Fixed namespace of this project's uuid5 provider UUIDs: a provider created
# here keeps its UUID across restarts and re-creations.
# (uuid5 of the URL namespace and the project's name; never change it.)
PROVIDER_NAMESPACE = uuidlib.UUID('052ce518-510a-50d2-abbb-dcb09979cdbe')
TRAIT_PREFIX = 'VGPU_'


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


def type_traits(type_id: str, short_name: str) -> tuple[str, ...]:
    """``CUSTOM_VGPU_NVIDIA_35`` and ``CUSTOM_VGPU_M60_2Q``."""
    return tuple(sorted({os_traits.normalize_name(TRAIT_PREFIX + type_id),
                         os_traits.normalize_name(TRAIT_PREFIX + short_name)}))


def provider_tree(host: str, assignment: mapping.Assignment
                  ) -> tuple[ProviderSpec, ...]:
    """The GPU providers this host should have, in address order.

    A GPU with nothing to offer and nothing in use has no provider:
    Placement refuses an inventory total of 0.
    """
    providers = []
    for gpu in assignment.gpus:
        total = max(gpu.capacity, gpu.used)
        if total == 0:
            continue
        name = provider_name(host, gpu.gpu.name)
        providers.append(ProviderSpec(
            name=name, uuid=provider_uuid(name), parent=host,
            device_address=gpu.gpu.address, mdev_type=gpu.type_id,
            type_name=gpu.type_name,
            inventory=InventorySpec(resource_class=gpu.resource_class,
                                    total=total),
            used=gpu.used,
            traits=(os_traits.OWNER_NOVA,) + type_traits(
                gpu.type_id, gpu.type_info.short_name)))
    return tuple(providers)
