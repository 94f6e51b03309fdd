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
"""The one planning pipeline: a host as read, planned.

The type each GPU serves and its capacity (:mod:`vgpu_nova_ext.mapping`),
the GPU providers (:mod:`vgpu_nova_ext.inventory`) and what each provider
stands for when a device is claimed (:mod:`.targets`). nova-compute's
driver plans with it at each periodic task, every command once; each says
the findings its own way (a log, a report).
"""

import dataclasses

from vgpu_nova_ext.conf import devices as devices_conf
from vgpu_nova_ext.devices import targets as targets_mod
from vgpu_nova_ext.host import model
from vgpu_nova_ext import inventory
from vgpu_nova_ext import mapping


@dataclasses.dataclass(frozen=True)
class HostPlan:
    snapshot: model.HostSnapshot
    assignment: mapping.Assignment
    tree: inventory.DesiredTree
    targets: dict[str, targets_mod.Target]


def plan(host: str, config: devices_conf.DeviceConfig,
         snapshot: model.HostSnapshot,
         existing_uuids: dict[str, str] | None = None,
         allocated: dict[str, int] | None = None,
         owner_trait: bool = True) -> HostPlan:
    """Plan ``snapshot`` of ``host`` under ``config``.

    ``existing_uuids``, ``allocated`` and ``owner_trait``: as for
    :func:`vgpu_nova_ext.inventory.provider_tree`.
    """
    assignment = mapping.assign(config, snapshot)
    return HostPlan(
        snapshot=snapshot, assignment=assignment,
        tree=inventory.provider_tree(host, assignment, existing_uuids,
                                     allocated=allocated,
                                     owner_trait=owner_trait),
        targets=targets_mod.targets(host, assignment, existing_uuids))
