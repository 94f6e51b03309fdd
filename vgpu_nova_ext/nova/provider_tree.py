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
"""The GPU providers in Nova's provider tree, and the reshape.

Nova's report client writes the tree; this fills it: one child provider
per GPU with its inventory and traits (an operator's own traits kept), a
total never below what is allocated, a provider whose GPU serves nothing
removed with what went with it said, and vGPU inventory in one of Nova's
in-tree layouts reshaped onto the GPUs that hold the devices.
"""

from nova import exception as nova_exception
import os_resource_classes as orc
from oslo_log import log as logging

from vgpu_nova_ext.devices import guest as guest_mod
from vgpu_nova_ext import inventory
from vgpu_nova_ext.nova import extension
from vgpu_nova_ext import reshape

LOG = logging.getLogger(__name__)


def update(ext: extension.Extension, host, virtapi, provider_tree,
           nodename: str, allocations=None) -> None:
    """The GPU providers of ``nodename`` in Nova's provider tree.

    :param host: Nova's libvirt host (its guests, for a reshape).
    :param virtapi: Nova's, whose report client reads Placement only
        where needed (a total going down, a provider going).
    :param allocations: Nova's, when it asks for a reshape.
    :raises ReshapeNeeded: vGPU inventory in one of Nova's layouts and no
        allocations given (Nova calls again with them).
    """
    # Each provider read once: the tree hands out deep copies.
    tree = {u: provider_tree.data(u)
            for u in provider_tree.get_provider_uuids(nodename)}
    children = {d.name: d for d in tree.values() if d.parent_uuid is not None}
    existing = {name: d.uuid for name, d in children.items()}
    desired = ext.refresh(existing)
    allocated = _allocated(virtapi, children, desired)
    if allocated:
        desired = ext.refresh(existing, allocated)
    old = _old_layout(ext, tree, nodename, desired)
    if old and allocations is None:
        # vGPU inventory in one of Nova's in-tree layouts (on the
        # compute node, or a provider per SR-IOV VF): Nova calls again
        # with the allocations, at start-up.
        LOG.info('vGPU inventory in an old layout (%s): asking Nova '
                 'for a reshape', ', '.join(sorted(
                     provider_tree.data(u).name for u in old)))
        raise nova_exception.ReshapeNeeded()
    for spec in desired.providers:
        data = children.get(spec.name)
        if data is None:
            provider_tree.new_child(spec.name, nodename, uuid=spec.uuid)
        body = {spec.resource_class: {
            'total': spec.inventory.total,
            'reserved': spec.inventory.reserved,
            'min_unit': spec.inventory.min_unit,
            'max_unit': spec.inventory.max_unit,
            'step_size': spec.inventory.step_size,
            'allocation_ratio': spec.inventory.allocation_ratio}}
        provider_tree.update_inventory(spec.name, body)
        # Only this project's traits change: an operator's own (Nova's
        # vGPU guide has them put on GPU providers) stay.
        provider_tree.update_traits(spec.name, inventory.merged_traits(
            data.traits if data is not None else (), spec))
    if old:
        _reshape(ext, host, provider_tree, nodename, desired, old,
                 allocations)
    wanted = {p.name for p in desired.providers}
    for name in existing:
        if name in wanted or not provider_tree.exists(name):
            continue
        data = provider_tree.data(name)
        if name.startswith(nodename + '_') and \
                _is_gpu_provider(data):
            if _reserve_while_allocated(virtapi, provider_tree, data):
                continue
            # The GPU serves nothing now; Nova deletes the provider
            # (it refuses while allocations remain, and logs it). The
            # operator's own traits go with it: flavors requiring them
            # stop finding this host, which is news.
            own = sorted(t for t in _traits_of(virtapi, data)
                         if not inventory.is_managed_trait(t))
            LOG.info('removing GPU provider %s: its GPU serves no vGPU '
                     'type now (run "vgpu-nova-ext check" for why)%s',
                     name, '; the operator traits %s go with it' %
                     ', '.join(own) if own else '')
            provider_tree.remove(name)


def _allocated(virtapi, children, desired) -> dict[str, int]:
    """Usage of the GPU providers whose total would go down.

    :func:`vgpu_nova_ext.inventory.usage_floors`, read through Nova's
    report client; when Placement cannot be read the total stays where it
    is.
    """
    current = {name: {rc: inv['total'] for rc, inv in d.inventory.items()}
               for name, d in children.items()}
    uuids = {name: d.uuid for name, d in children.items()}

    def usage(name: str, rc: str) -> int:
        try:
            response = virtapi.reportclient.get(
                '/resource_providers/%s/usages' % uuids[name],
                version='1.9')
            if response.status_code != 200:
                raise ValueError('HTTP %d' % response.status_code)
            return response.json()['usages'].get(rc, 0)
        except Exception as exc:
            LOG.warning('cannot read the usage of %s in Placement (%s); '
                        'its total stays at %d', name, exc,
                        current[name][rc])
            return current[name][rc]
    return inventory.usage_floors(desired, current, usage)


def _reserve_while_allocated(virtapi, provider_tree, data) -> bool:
    """Keep a GPU provider that serves nothing now but holds allocations.

    Its GPU lost its VFs or GPU instances (a reboot it has not come back
    from: "vgpu-nova-ext check" says why): Placement refuses to delete a
    provider with allocations, which would fail the whole resource update
    of the node. It stays, every unit reserved, so that nothing new lands
    on it, and comes back as it was once its GPU does.
    """
    classes = [rc for rc in data.inventory if rc == orc.VGPU or
               rc.startswith(orc.CUSTOM_NAMESPACE)]
    try:
        response = virtapi.reportclient.get(
            '/resource_providers/%s/usages' % data.uuid, version='1.9')
        usages = response.json()['usages'] \
            if response.status_code == 200 else None
    except Exception:
        usages = None
    # Unknown usage counts as used: nothing is deleted on a failed read.
    used = {rc: None if usages is None else usages.get(rc, 0)
            for rc in classes}
    if not any(u is None or u > 0 for u in used.values()):
        return False
    body = {}
    for rc in classes:
        inv = dict(data.inventory[rc])
        inv['reserved'] = inv['total']
        body[rc] = inv
    provider_tree.update_inventory(data.name, body)
    LOG.warning('GPU provider %s: its GPU serves no vGPU now but %s '
                'allocated there; the provider stays with every unit '
                'reserved until the GPU is back (run "vgpu-nova-ext check" '
                'for why)', data.name, ', '.join(
                    '%s %s' % ('?' if u is None else u, rc)
                    for rc, u in sorted(used.items())))
    return True


def _vgpu_classes(desired) -> set[str]:
    """The classes vGPUs are counted in, now or by Nova's layouts."""
    return {p.resource_class for p in desired.providers} | {orc.VGPU}


def _old_layout(ext: extension.Extension, tree, nodename: str,
                desired) -> set[str]:
    """Providers holding vGPU inventory that this layout does not.

    Not a GPU provider of this layout that serves nothing now (other
    owners took its room): that one is removed, not reshaped.
    """
    classes = _vgpu_classes(desired)
    wanted = {p.uuid for p in desired.providers}
    gpus = {inventory.provider_name(nodename, g.name) for g in
            ext.snapshot.gpus}
    return {u for u, data in tree.items()
            if u not in wanted and data.name not in gpus and
            classes & set(data.inventory)}


def _reshape(ext: extension.Extension, host, provider_tree, nodename: str,
             desired, old, allocations) -> None:
    """Move vGPU allocations onto the GPUs that hold the devices.

    ``allocations`` (Nova's, keyed by consumer) is changed in place, as
    Nova's reshape expects; old inventory leaves the tree.
    """
    gpu_of = {}
    snapshot = ext.backend.scan()
    for device in snapshot.mediated_devices:
        gpu = snapshot.gpu_of_parent(device.parent)
        if gpu is not None:
            gpu_of[device.device_id] = inventory.provider_name(
                nodename, gpu.name)
    domains, _ = guest_mod.domains(host.get_connection())
    owners = {uuid: [gpu_of[d] for d in devices if d in gpu_of]
              for uuid, devices in domains.items()}
    root_uuid = provider_tree.data(nodename).uuid
    states = {}
    for rp_uuid in provider_tree.get_provider_uuids(nodename):
        data = provider_tree.data(rp_uuid)
        states[rp_uuid] = reshape.ProviderState(
            uuid=data.uuid, name=data.name,
            generation=data.generation or 0,
            inventories=dict(data.inventory),
            parent_uuid=data.parent_uuid)
    consumers = [reshape.ConsumerState(
        uuid=consumer,
        allocations={rp: dict(a['resources']) for rp, a in
                     body['allocations'].items()},
        project_id=body.get('project_id'), user_id=body.get('user_id'),
        generation=body.get('consumer_generation'))
        for consumer, body in allocations.items()]
    try:
        plan = reshape.plan(
            states[root_uuid],
            [s for u, s in states.items() if u != root_uuid],
            consumers, desired, owners)
    except reshape.ReshapeError as exc:
        raise nova_exception.ReshapeFailed(error=str(exc))
    for consumer, body in plan.allocations.items():
        allocations[consumer]['allocations'] = body['allocations']
    classes = _vgpu_classes(desired)
    root = provider_tree.data(root_uuid)
    if classes & set(root.inventory):
        provider_tree.update_inventory(nodename, {
            rc: inv for rc, inv in root.inventory.items()
            if rc not in classes})
    for rp_uuid in plan.retired:
        provider_tree.remove(rp_uuid)
    LOG.info('reshaped the vGPU allocations of %d consumer(s) onto the '
             'GPU providers', len(plan.allocations))


def _traits_of(virtapi, data) -> set[str]:
    """A provider's traits as Placement has them now.

    Read only when a provider goes (rare): Nova's cache of the tree
    learns traits an operator added only at its next refresh.
    """
    try:
        response = virtapi.reportclient.get(
            '/resource_providers/%s/traits' % data.uuid, version='1.6')
        if response.status_code == 200:
            return set(response.json()['traits'])
    except Exception as exc:
        LOG.debug('cannot read the traits of %s (%s): the cached ones '
                  'are named', data.name, exc)
    return set(data.traits)


def _is_gpu_provider(data) -> bool:
    return orc.VGPU in data.inventory or any(
        t.startswith(inventory.MANAGED_TRAIT_PREFIX)
        for t in data.traits)
