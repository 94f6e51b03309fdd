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
"""The GPU providers of a host as targets of claims, and what is asked.

A :class:`Target` is what one GPU provider stands for on this host (its
GPU, type, parents, limits); :func:`wanted` reads Nova's allocations
against them.
"""

import dataclasses

import os_resource_classes as orc

from vgpu_nova_ext import exception
from vgpu_nova_ext import inventory
from vgpu_nova_ext import mapping
from vgpu_nova_ext.vendors import base as vendors_base


@dataclasses.dataclass(frozen=True)
class Target:
    """What one GPU provider stands for on this host."""

    provider_uuid: str
    provider_name: str
    gpu: str
    type_id: str
    resource_class: str
    max_unit: int
    parents: tuple[str, ...]
    sriov: bool
    max_per_gpu: int | None
    type_info: vendors_base.TypeInfo | None = None


@dataclasses.dataclass(frozen=True)
class ClaimedDevice:
    device_id: str
    kind: str
    gpu: str
    parent: str
    type_id: str
    provider_uuid: str | None = None


@dataclasses.dataclass(frozen=True)
class Claim:
    consumer: str
    devices: tuple[ClaimedDevice, ...]


def targets(host: str, assignment: mapping.Assignment,
            existing_uuids: dict[str, str] | None = None
            ) -> dict[str, Target]:
    """{provider uuid: Target} of the GPU providers of a plan."""
    tree = inventory.provider_tree(host, assignment, existing_uuids)
    by_name = {inventory.provider_name(host, a.gpu.name): a
               for a in assignment.gpus}
    out = {}
    for spec in tree.providers:
        gpu = by_name[spec.name]
        out[spec.uuid] = Target(
            provider_uuid=spec.uuid, provider_name=spec.name,
            gpu=gpu.gpu.name, type_id=gpu.type_id,
            resource_class=gpu.resource_class,
            max_unit=spec.inventory.max_unit, parents=gpu.parents,
            sriov=gpu.gpu.sriov, max_per_gpu=gpu.max_per_gpu,
            type_info=gpu.type_info)
    return out


def wanted(consumer: str, allocations: dict,
           targets: dict[str, Target]) -> list[tuple[Target, int]]:
    """(target, vGPUs) asked of each GPU provider of this host.

    :raises ClaimError: a class or a count no provider here takes, or
        allocations only on another host's providers.
    """
    wanted = []
    # Other resources (VCPU on the root, PCI devices ...) are not ours.
    classes = {t.resource_class for t in targets.values()} | {
        orc.VGPU}
    elsewhere = []
    for rp_uuid, body in sorted(allocations.items()):
        resources = body.get('resources', body)
        units = {rc: n for rc, n in resources.items()
                 if rc in classes and n}
        if not units:
            continue
        target = targets.get(rp_uuid)
        if target is None:
            # During an evacuation the instance holds allocations on
            # the host it left too: those are not this host's to claim.
            elsewhere.append(rp_uuid)
            continue
        for rc, n in units.items():
            if rc != target.resource_class:
                raise exception.ClaimError(
                    'claim for %s: %s of %s asked on %s, which '
                    'provides %s' % (consumer, n, rc,
                                     target.provider_name,
                                     target.resource_class))
            if n > target.max_unit:
                raise exception.ClaimError(
                    'claim for %s: %d vGPUs of %s on one GPU (%s), but '
                    'the type allows %d per instance ([mdev_%s] '
                    'max_unit)' % (consumer, n, target.type_id,
                                   target.provider_name, target.max_unit,
                                   target.type_id))
            wanted.append((target, n))
    if elsewhere and not wanted:
        raise exception.ClaimError(
            'claim for %s: provider(s) %s are not among this host\'s GPU '
            'providers (%s); was the instance scheduled to another '
            'host?' % (consumer, ', '.join(elsewhere), ', '.join(
                sorted(t.provider_name for t in targets.values()))
                or 'none'))
    return wanted
