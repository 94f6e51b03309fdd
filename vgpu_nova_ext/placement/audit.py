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
"""Compare the desired GPU providers with what Placement holds. Read-only.

Reads: the compute node by name, its tree, then each provider's
inventories and each GPU provider's traits; a usage read only where a total
is above the desired one (to tell an allocation floor from drift) and a
name look-up only for a missing provider (to tell "missing" from
"parent"). Placement has no call that returns a provider's inventories and
traits together.
"""

import dataclasses
import json

import os_resource_classes as orc

from vgpu_nova_ext import findings
from vgpu_nova_ext import inventory
from vgpu_nova_ext import mapping
from vgpu_nova_ext.placement import client as placement
from vgpu_nova_ext import reshape

MISSING = 'missing'
UNEXPECTED = 'unexpected'
INVENTORY = 'inventory'
TRAITS = 'traits'
PARENT = 'parent'


_CODES = {
    MISSING: findings.PROVIDER_MISSING,
    UNEXPECTED: findings.PROVIDER_UNEXPECTED,
    INVENTORY: findings.PROVIDER_INVENTORY,
    TRAITS: findings.PROVIDER_TRAITS,
    PARENT: findings.PROVIDER_PARENT,
}
_FIXES = {
    MISSING: 'nova-compute creates it at its next resource update; if it '
             'does not, its log says why',
    UNEXPECTED: 'nova-compute removes it at its next resource update once '
                'nothing is allocated from it; else move or delete the '
                'instances that hold it',
    INVENTORY: 'nova-compute sets it at its next resource update; a total '
               'stays at its usage until instances leave',
    TRAITS: 'nova-compute sets this project\'s traits at its next resource '
            'update (others\' traits are left alone)',
    PARENT: 'delete the stray provider (openstack resource provider delete) '
            'once nothing is allocated from it; nova-compute makes it again '
            'under this host',
}


@dataclasses.dataclass(frozen=True)
class Drift:
    """One difference, with the structured values the JSON output keeps.

    :meth:`finding` is the same in the one finding type.
    """

    provider: str
    kind: str
    expected: object
    actual: object

    @property
    def code(self) -> str:
        return _CODES[self.kind]

    def finding(self) -> findings.Finding:
        return findings.Finding(
            self.code, findings.WARNING, 'provider %s' % self.provider,
            json.dumps(self.actual, sort_keys=True),
            'Placement holds %s where this host reports %s' % (
                json.dumps(self.actual, sort_keys=True),
                json.dumps(self.expected, sort_keys=True)),
            _FIXES[self.kind])


@dataclasses.dataclass(frozen=True)
class AuditResult:
    host: str
    drift: tuple[Drift, ...]
    desired: inventory.DesiredTree
    reads: int


def _inventory_view(body: dict | None) -> dict | None:
    if body is None:
        return None
    return {k: body.get(k) for k in ('total', 'reserved', 'min_unit',
                                     'max_unit', 'step_size',
                                     'allocation_ratio')}


def audit(client: placement.PlacementClient, host: str,
          assignment: mapping.Assignment) -> AuditResult:
    """Every drift between Placement and the plan for ``host``."""
    start = client.requests
    root = client.provider_by_name(host)
    if root is None:
        raise placement.PlacementError(
            'Placement has no compute node provider named %r; check --host '
            '(it must be the hypervisor host name nova-compute reports) and '
            'that nova-compute has started on this host' % host)
    listed = [p for p in client.providers_in_tree(root['uuid'])
              if p['uuid'] != root['uuid']]
    existing = {p['name']: p['uuid'] for p in listed}
    inventories = {p['uuid']: client.inventories(p['uuid'])['inventories']
                   for p in [root] + listed}
    draft = inventory.provider_tree(host, assignment,
                                    existing_uuids=existing)
    names = {p['uuid']: p['name'] for p in [root] + listed}
    current = {names[u]: {rc: body['total'] for rc, body in inv.items()}
               for u, inv in inventories.items()}
    allocated = inventory.usage_floors(
        draft, current,
        lambda name, rc: client.usages(existing[name]).get(rc, 0))
    desired = inventory.provider_tree(host, assignment,
                                      existing_uuids=existing,
                                      allocated=allocated)
    classes = {p.resource_class for p in desired.providers} | {orc.VGPU}
    drift = []
    by_name = {p['name']: p for p in listed}
    for spec in desired.providers:
        actual = by_name.get(spec.name)
        if actual is None:
            elsewhere = client.provider_by_name(spec.name)
            if elsewhere is not None:
                drift.append(Drift(spec.name, PARENT, host,
                                   elsewhere['parent_provider_uuid']))
            else:
                drift.append(Drift(spec.name, MISSING, _view(spec), None))
            continue
        if actual['parent_provider_uuid'] != root['uuid']:
            drift.append(Drift(spec.name, PARENT, root['uuid'],
                               actual['parent_provider_uuid']))
        want = {spec.resource_class: reshape.inventory_body(spec.inventory)}
        have = {rc: _inventory_view(body)
                for rc, body in inventories[spec.uuid].items()}
        if have != want:
            drift.append(Drift(spec.name, INVENTORY, want, have))
        # Only this project's traits can drift; others' are not its own.
        have = client.traits(spec.uuid)['traits']
        traits = sorted(t for t in have if inventory.is_managed_trait(t))
        expected = sorted(t for t in inventory.merged_traits(have, spec)
                          if inventory.is_managed_trait(t))
        if traits != expected:
            drift.append(Drift(spec.name, TRAITS, expected, traits))
    wanted = {p.name for p in desired.providers}
    for provider in listed:
        if provider['name'] in wanted:
            continue
        held = classes & set(inventories[provider['uuid']])
        if held or provider['name'].startswith(host + '_pci_'):
            drift.append(Drift(provider['name'], UNEXPECTED, None, {
                rc: _inventory_view(inventories[provider['uuid']][rc])
                for rc in sorted(held)}))
    on_root = classes & set(inventories[root['uuid']])
    if on_root:
        drift.append(Drift(host, INVENTORY, {}, {
            rc: _inventory_view(inventories[root['uuid']][rc])
            for rc in sorted(on_root)}))
    return AuditResult(host=host, drift=tuple(drift), desired=desired,
                       reads=client.requests - start)


def _view(spec: inventory.ProviderSpec) -> dict:
    return {'uuid': spec.uuid, 'inventories': {
        spec.resource_class: reshape.inventory_body(spec.inventory)},
        'traits': list(spec.traits)}
