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
"""Move vGPU allocations from Nova's in-tree layouts to this one. Pure.

Nova's in-tree support left vGPU inventory and allocations in one of two
layouts:

- the VGPU inventory on the compute node (root) provider itself (Nova
  before Stein);
- one child provider per mdev parent, which for SR-IOV GPUs means one per
  virtual function (``<host>_pci_0000_41_00_4`` ...).

This project has one provider per physical GPU. Given what Placement holds
and which GPU really holds each consumer's devices, :func:`plan` computes
the ``POST /reshaper`` body that moves every allocation to the GPU that
holds the device, keeping every other resource where it is. Nothing is
lost: a consumer whose devices cannot be found is an error, not a guess.
"""

import dataclasses

from vgpu_nova_ext import exception
from vgpu_nova_ext import inventory


class ReshapeError(exception.VGPUNovaExtError):
    code = 'vgpu_nova_ext.reshape'


@dataclasses.dataclass(frozen=True)
class ProviderState:
    """A provider as Placement holds it now."""

    uuid: str
    name: str
    generation: int
    inventories: dict
    """{resource class: inventory fields} as Placement returns them."""
    parent_uuid: str | None = None


@dataclasses.dataclass(frozen=True)
class ConsumerState:
    """A consumer's allocations as ``GET /allocations/{consumer}``."""

    uuid: str
    allocations: dict
    """{provider uuid: {resource class: amount}}."""
    project_id: str
    user_id: str
    generation: int | None
    consumer_type: str = 'INSTANCE'


@dataclasses.dataclass(frozen=True)
class ReshapePlan:
    inventories: dict
    """The ``inventories`` of the reshaper body."""
    allocations: dict
    """The ``allocations`` of the reshaper body."""
    retired: tuple[str, ...]
    """Old per-VF providers to delete once the reshape is done."""

    @property
    def body(self) -> dict:
        return {'inventories': self.inventories,
                'allocations': self.allocations}


def inventory_body(spec: inventory.InventorySpec) -> dict:
    return {'total': spec.total, 'reserved': spec.reserved,
            'min_unit': spec.min_unit, 'max_unit': spec.max_unit,
            'step_size': spec.step_size,
            'allocation_ratio': spec.allocation_ratio}


def needed(root: ProviderState, providers: list[ProviderState],
           desired: inventory.DesiredTree) -> bool:
    """Whether Placement holds vGPU inventory in an old layout."""
    classes = {p.resource_class for p in desired.providers}
    wanted = {p.uuid for p in desired.providers}
    if classes & set(root.inventories):
        return True
    return any(classes & set(p.inventories) for p in providers
               if p.uuid not in wanted and p.uuid != root.uuid)


def plan(root: ProviderState, providers: list[ProviderState],
         consumers: list[ConsumerState], desired: inventory.DesiredTree,
         device_gpus: dict[str, list[str]]) -> ReshapePlan:
    """The reshape from an old layout to ``desired``.

    :param providers: every provider in the root's tree but the root, the
        desired ones included (they must exist: create them first).
    :param consumers: the consumers with allocations on the root or on a
        provider that goes away.
    :param device_gpus: {consumer: [provider name of the GPU holding each
        of its vGPUs]}, one entry per vGPU unit.
    """
    by_uuid = {p.uuid: p for p in providers}
    desired_by_name = desired.by_name()
    classes = {p.resource_class for p in desired.providers}
    old = {p.uuid for p in providers
           if p.uuid not in {d.uuid for d in desired.providers}
           and classes & set(p.inventories)}
    if classes & set(root.inventories):
        old.add(root.uuid)

    allocations = {}
    moved: dict[str, int] = {}
    for consumer in consumers:
        body = {}
        units: dict[str, int] = {}
        for rp_uuid, resources in consumer.allocations.items():
            keep = {rc: n for rc, n in resources.items()
                    if not (rp_uuid in old and rc in classes)}
            for rc, n in resources.items():
                if rp_uuid in old and rc in classes:
                    units[rc] = units.get(rc, 0) + n
            if keep:
                body.setdefault(rp_uuid, {}).update(keep)
        if not units:
            continue
        gpus = list(device_gpus.get(consumer.uuid, ()))
        if len(gpus) != sum(units.values()):
            raise ReshapeError(
                'consumer %s holds %s in the old layout but %d device(s) '
                'of it were found on the host (%s); nothing was changed. '
                'Check the instance\'s domain XML and the devices with '
                '"vgpu-nova-ext devices"' % (
                    consumer.uuid, ', '.join('%s=%d' % kv for kv in sorted(
                        units.items())), len(gpus), ', '.join(gpus) or
                    'none'))
        for gpu_name in gpus:
            target = desired_by_name.get(gpu_name)
            if target is None or target.resource_class not in units:
                raise ReshapeError(
                    'consumer %s has a device on %s, which serves no %s in '
                    'the new layout; nothing was changed. Fix the type '
                    'mapping (vgpu-nova-ext check) first' % (
                        consumer.uuid, gpu_name, _list(units)))
            rc = target.resource_class
            units[rc] -= 1
            if units[rc] < 0:
                raise ReshapeError(
                    'consumer %s has more %s devices than allocations; '
                    'nothing was changed' % (consumer.uuid, rc))
            slot = body.setdefault(target.uuid, {})
            slot[rc] = slot.get(rc, 0) + 1
            moved[target.uuid] = moved.get(target.uuid, 0) + 1
        allocations[consumer.uuid] = {
            'allocations': {rp: {'resources': res}
                            for rp, res in body.items()},
            'project_id': consumer.project_id,
            'user_id': consumer.user_id,
            'consumer_generation': consumer.generation,
            'consumer_type': consumer.consumer_type,
        }

    inventories = {}
    for spec in desired.providers:
        state = by_uuid.get(spec.uuid)
        if state is None:
            raise ReshapeError(
                'provider %s (%s) must exist before the reshape' % (
                    spec.name, spec.uuid))
        inv = inventory_body(spec.inventory)
        # Never below what the moved allocations need.
        inv['total'] = max(inv['total'], moved.get(spec.uuid, 0))
        inventories[spec.uuid] = {
            'resource_provider_generation': state.generation,
            'inventories': {spec.resource_class: inv}}
    for rp_uuid in old:
        state = root if rp_uuid == root.uuid else by_uuid[rp_uuid]
        inventories[rp_uuid] = {
            'resource_provider_generation': state.generation,
            'inventories': {rc: inv for rc, inv in state.inventories.items()
                            if rc not in classes}}
    return ReshapePlan(inventories=inventories, allocations=allocations,
                       retired=tuple(sorted(u for u in old
                                            if u != root.uuid)))


def _list(units: dict[str, int]) -> str:
    return ', '.join(sorted(units))
