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
"""Write the desired GPU providers to Placement, outside nova-compute.

The demo and the tests publish the tree here through
:class:`vgpu_nova_ext.placement.client.PlacementClient`; inside nova-compute,
Nova's report client does it from the driver's provider tree instead. Both
write one tree: :func:`vgpu_nova_ext.inventory.provider_tree`, with totals
floored at the usage Placement reports for providers that would shrink, and
allocations in an old layout moved by :func:`vgpu_nova_ext.reshape.plan` in
one ``POST /reshaper``. A Placement the driver has written
is left as it is by :meth:`TreePublisher.sync` (tested in
tests/nova/test_driver.py, TestOneTree). This writer is kept rather than
Nova's report client because the demo and the benchmarks run where Nova is
not installed.

Few calls: custom traits and resource classes are ensured once per
process; providers are created one call each (Placement has no batch
create); every inventory goes in one ``POST /reshaper``; traits one call
per provider that needs them. A cache of the provider generations makes a
periodic sync of an unchanged tree a single read.
"""

import dataclasses

import os_resource_classes as orc
import os_traits
from oslo_log import log as logging

from vgpu_nova_ext import inventory
from vgpu_nova_ext import mapping
from vgpu_nova_ext.placement import client as placement
from vgpu_nova_ext import reshape

LOG = logging.getLogger(__name__)
CONFLICT_RETRIES = 3


@dataclasses.dataclass(frozen=True)
class SyncResult:
    desired: inventory.DesiredTree
    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    reshaped: tuple[str, ...] = ()
    """Consumers whose allocations moved."""
    requests: int = 0


@dataclasses.dataclass
class _Cache:
    generations: dict[str, int]
    desired: inventory.DesiredTree


class TreePublisher:
    """Keeps a host's GPU providers in Placement as the plan says."""

    def __init__(self, client: placement.PlacementClient,
                 host: str, owner_trait: bool = True) -> None:
        """Publish ``host``'s GPU providers through ``client``.

        :param owner_trait: as the driver's Nova marks its providers (see
            :func:`vgpu_nova_ext.nova.compat.features`).
        """
        self.client = client
        self.host = host
        self.owner_trait = owner_trait
        self.root_uuid: str | None = None
        self._ensured: set[str] = set()
        self._cache: _Cache | None = None

    def sync(self, assignment: mapping.Assignment,
             device_gpus: dict[str, list[str]] | None = None) -> SyncResult:
        """Make Placement match ``assignment``; retry on a conflict.

        :param device_gpus: {consumer: [GPU provider name per vGPU]}, only
            needed when allocations sit in one of Nova's old layouts.
        """
        for attempt in range(CONFLICT_RETRIES + 1):
            before = self.client.requests
            try:
                result = self._sync(assignment, device_gpus or {})
            except placement.GenerationConflict:
                self._cache = None
                if attempt == CONFLICT_RETRIES:
                    raise
                LOG.info('generation conflict under %s; refreshing and '
                         'trying again', self.host)
                continue
            except placement.PlacementError:
                self._cache = None
                raise
            return dataclasses.replace(
                result, requests=self.client.requests - before)

    def _root(self) -> str:
        if self.root_uuid is None:
            root = self.client.provider_by_name(self.host)
            if root is None:
                raise placement.PlacementError(
                    'Placement has no compute node provider named %r; start '
                    'nova-compute on this host first, or give --host the '
                    'name Placement knows it by' % self.host)
            self.root_uuid = root['uuid']
        return self.root_uuid

    def _sync(self, assignment: mapping.Assignment,
              device_gpus: dict[str, list[str]]) -> SyncResult:
        root_uuid = self._root()
        listed = self.client.providers_in_tree(root_uuid)
        existing = {p['name']: p['uuid'] for p in listed
                    if p['uuid'] != root_uuid}
        cache = self._cache
        if cache is not None and cache.generations == {
                p['uuid']: p['generation'] for p in listed}:
            desired = inventory.provider_tree(
                self.host, assignment, existing_uuids=existing,
                owner_trait=self.owner_trait)
            if desired == cache.desired:
                return SyncResult(desired=desired)

        # What Placement has: every provider's inventories.
        states = {p['uuid']: self._state(p) for p in listed}
        draft = inventory.provider_tree(self.host, assignment,
                                        existing_uuids=existing,
                                        owner_trait=self.owner_trait)
        desired = inventory.provider_tree(
            self.host, assignment, existing_uuids=existing,
            allocated=self._allocated(draft, states),
            owner_trait=self.owner_trait)
        created = self._create_missing(desired, states, root_uuid)
        updated = self._set_traits(desired, states, created)
        reshaped = ()
        root = states[root_uuid]
        others = [s for u, s in states.items() if u != root_uuid]
        retired: tuple[str, ...] = ()
        if reshape.needed(root, others, desired):
            for spec in desired.providers:
                self._ensure_class(spec.resource_class)
            plan = reshape.plan(root, others,
                                self._old_consumers(root, others, desired),
                                desired, device_gpus)
            self.client.reshape(plan.inventories, plan.allocations)
            self._mark_updated(states, plan.inventories, updated)
            reshaped = tuple(sorted(plan.allocations))
            retired = plan.retired
        else:
            changes = {}
            for spec in desired.providers:
                state = states[spec.uuid]
                body = reshape.inventory_body(spec.inventory)
                if not _same(state.inventories, spec.resource_class, body):
                    self._ensure_class(spec.resource_class)
                    changes[spec.uuid] = {
                        'resource_provider_generation': state.generation,
                        'inventories': {spec.resource_class: body}}
            if changes:
                self.client.reshape(changes, {})
                self._mark_updated(states, changes, updated)
        deleted = self._delete_unwanted(desired, states, root_uuid, retired)
        if created or updated or deleted:
            # Generations after the writes: one read rather than guessing
            # how many times each write bumped them.
            listed = self.client.providers_in_tree(root_uuid)
        self._cache = _Cache(
            generations={p['uuid']: p['generation'] for p in listed},
            desired=desired)
        return SyncResult(desired=desired, created=tuple(created),
                          updated=tuple(sorted(updated - set(created))),
                          deleted=tuple(deleted), reshaped=reshaped)

    def _state(self, provider: dict) -> reshape.ProviderState:
        inv = self.client.inventories(provider['uuid'])
        return reshape.ProviderState(
            uuid=provider['uuid'], name=provider['name'],
            generation=inv['resource_provider_generation'],
            inventories=inv['inventories'],
            parent_uuid=provider['parent_provider_uuid'])

    def _create_missing(self, desired, states, root_uuid) -> list[str]:
        created = []
        for spec in desired.providers:
            if spec.uuid in states:
                continue
            made = self.client.create_provider(spec.name, spec.uuid,
                                               root_uuid)
            states[spec.uuid] = reshape.ProviderState(
                spec.uuid, spec.name, made['generation'], {}, root_uuid)
            created.append(spec.name)
        return created

    def _set_traits(self, desired, states, created) -> set[str]:
        updated = set()
        for spec in desired.providers:
            have = ([] if spec.name in created
                    else self.client.traits(spec.uuid)['traits'])
            # An operator's traits on the provider stay.
            want = inventory.merged_traits(have, spec)
            if sorted(have) == want:
                continue
            self._ensure(spec)
            answer = self.client.set_traits(
                spec.uuid, states[spec.uuid].generation, want)
            states[spec.uuid] = dataclasses.replace(
                states[spec.uuid],
                generation=answer['resource_provider_generation'])
            updated.add(spec.name)
        return updated

    @staticmethod
    def _mark_updated(states, inventories: dict, updated: set[str]) -> None:
        for rp_uuid in inventories:
            updated.add(states[rp_uuid].name)

    def _delete_unwanted(self, desired, states, root_uuid,
                         retired) -> list[str]:
        """Providers of this host's GPUs that serve nothing now."""
        wanted = {p.uuid for p in desired.providers}
        deleted = []
        for rp_uuid, state in sorted(states.items()):
            if rp_uuid in wanted or rp_uuid == root_uuid or not \
                    state.name.startswith(self.host + '_'):
                continue
            if rp_uuid not in retired and \
                    self.client.provider_allocations(rp_uuid):
                LOG.warning('%s serves nothing now but has allocations; '
                            'it is kept until they are freed', state.name)
                continue
            self.client.delete_provider(rp_uuid)
            deleted.append(state.name)
        return deleted

    def _allocated(self, draft: inventory.DesiredTree,
                   states: dict[str, reshape.ProviderState]
                   ) -> dict[str, int]:
        """Usage of the providers whose total would shrink."""
        by_name = {s.name: s for s in states.values()}
        current = {s.name: {rc: inv['total']
                            for rc, inv in s.inventories.items()}
                   for s in states.values()}
        return inventory.usage_floors(
            draft, current,
            lambda name, rc: self.client.usages(by_name[name].uuid).get(rc, 0))

    def _old_consumers(self, root, others, desired):
        """The consumers holding vGPU resources in an old layout."""
        classes = {p.resource_class for p in desired.providers}
        wanted = {p.uuid for p in desired.providers}
        consumers = {}
        for state in [root] + others:
            if state.uuid in wanted or not classes & set(state.inventories):
                continue
            for consumer, held in self.client.provider_allocations(
                    state.uuid).items():
                if consumer in consumers or not classes & set(
                        held['resources']):
                    continue
                found = self.client.allocations(consumer)
                consumers[consumer] = reshape.ConsumerState(
                    uuid=consumer,
                    allocations={rp: a['resources'] for rp, a in
                                 found['allocations'].items()},
                    project_id=found['project_id'],
                    user_id=found['user_id'],
                    generation=found.get('consumer_generation'),
                    consumer_type=found.get('consumer_type', 'INSTANCE'))
        return list(consumers.values())

    def _ensure(self, spec: inventory.ProviderSpec) -> None:
        """Create the custom traits a provider is about to get."""
        for name in spec.traits:
            if os_traits.is_custom(name) and name not in self._ensured:
                self.client.ensure_trait(name)
                self._ensured.add(name)

    def _ensure_class(self, resource_class: str) -> None:
        if orc.is_custom(resource_class) and \
                resource_class not in self._ensured:
            self.client.ensure_resource_class(resource_class)
            self._ensured.add(resource_class)


def _same(inventories: dict, resource_class: str, want: dict) -> bool:
    """Whether Placement holds exactly one inventory, equal to ``want``.

    Only the fields written are compared.
    """
    have = inventories.get(resource_class)
    return set(inventories) == {resource_class} and have is not None and \
        all(have.get(k) == v for k, v in want.items())
