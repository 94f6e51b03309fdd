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
"""Live migration of vGPU guests.

Nova's own mdev live migration (libvirt >= 8.6.0, QEMU >= 8.1.0 on both
hosts) with the ledger as the source of truth: the destination claims
devices of the same types for the instance before the guest moves, Nova
rewrites the migrated XML to them, the source's devices pass to the
migration while the guest moves (Nova's conductor gave it the source's
allocations) and are freed once the guest runs on the destination, or
given back at a rollback. A VF of NVIDIA's vendor-specific VFIO goes the
same way; its ``<hostdev>`` is rewritten by Nova's PCI path
(``pci_dev_map_src_dst``), under that path's own minimums, checked on both
hosts.
"""

from nova import exception as nova_exception
from nova.virt.libvirt import host as libvirt_host
import os_resource_classes as orc
from oslo_log import log as logging

from vgpu_nova_ext.host import address
from vgpu_nova_ext.host import model
from vgpu_nova_ext import inventory
from vgpu_nova_ext.nova import extension
from vgpu_nova_ext.nova import hooks

LOG = logging.getLogger(__name__)
# Live migration of a VF bound to a kernel VFIO variant driver, as Nova's
# PCI path requires it (MIN_VFIO_PCI_VARIANT_* in Nova 31+).
MIN_VFIO_LIVEMIG_LIBVIRT = (10, 0, 0)
MIN_VFIO_LIVEMIG_QEMU = (8, 2, 2)


def check_source(ext: extension.Extension, host, instance,
                 permit_post_copy: bool) -> None:
    """On the source, before anything moves."""
    held = ext.ledger.of_consumer(instance.uuid)
    if held and permit_post_copy:
        # QEMU refuses a VFIO device's migration in post-copy mode, and
        # Nova would switch to it when the migration is slow.
        raise nova_exception.MigrationPreCheckError(
            reason='instance %s holds vGPUs (%s), which cannot be live '
                   'migrated in post-copy mode; set [libvirt] '
                   'live_migration_permit_post_copy = False on %s (QEMU '
                   'refuses "VFIO migration ... with postcopy migration")'
                   % (instance.uuid, ', '.join(e.device_id for e in held),
                      ext.nodename))
    vfs = [e.device_id for e in held if e.kind == model.VF]
    if vfs:
        _refuse_old_vfio(ext, host, instance, vfs, 'source')


def types_of(ext: extension.Extension, device_ids) -> dict[str, str]:
    """{device id: type} of the devices the ledger knows."""
    return {e.device_id: e.type_id for e in
            (ext.ledger.get(u) for u in device_ids) if e is not None}


def map_at_destination(ext: extension.Extension, host, instance,
                       migrate_data, source: dict[str, str], claim):
    """Claim devices of the source's types here and map them.

    :param source: {source device: type}, as the source sent them.
    :param claim: the driver's claim for the instance (allocations ->
        device ids).
    :returns: ``migrate_data`` with the map Nova rewrites the XML by.
    """
    vfs = [d for d in source if address.normalize_pci_address(d)]
    if vfs:
        _refuse_old_vfio(ext, host, instance, vfs, 'destination')
    served = {t.type_id for t in ext.allocator.targets.values()}
    missing = sorted(set(source.values()) - served)
    if missing:
        raise nova_exception.MigrationPreCheckError(
            reason='instance %s holds vGPUs of type %s, which no GPU of '
                   'this host serves' % (instance.uuid, ', '.join(missing)))
    try:
        claimed = claim()
    except nova_exception.ComputeResourcesUnavailable as exc:
        raise nova_exception.MigrationPreCheckError(
            reason=exc.format_message())
    types = types_of(ext, claimed)
    free = sorted(claimed)
    target = {}
    for src_mdev, src_type in sorted(source.items()):
        match = next((d for d in free if types.get(d) == src_type), None)
        if match is not None:
            free.remove(match)
            target[src_mdev] = match
    if len(target) != len(source):
        hooks.log_freed(ext.allocator.release(instance.uuid), instance)
        raise nova_exception.MigrationPreCheckError(
            reason='instance %s: the devices claimed here (%s) do not match '
                   'its devices on the source (%s)' % (
                       instance.uuid, types, source))
    try:
        # The flavor's plugin parameters, before the incoming guest starts
        # (the domain XML comes from the source: no guest config is built
        # here).
        hooks.apply_vgpu_params(ext, instance, [
            (ext.ledger.get(d).kind, d) for d in claimed])
    except nova_exception.BuildAbortException as exc:
        hooks.log_freed(ext.allocator.release(instance.uuid), instance)
        raise nova_exception.MigrationPreCheckError(
            reason=exc.format_message())
    LOG.info('live migration: source vGPU devices map to %s here', target,
             instance=instance)
    # An mdev's <hostdev> is rewritten by its UUID, a VF's by its PCI
    # address (Nova's PCI path, beside any PCI device of the flavor's).
    migrate_data.target_mdevs = {s: d for s, d in target.items()
                                 if s not in vfs}
    pci_map = dict(migrate_data.pci_dev_map_src_dst
                   if 'pci_dev_map_src_dst' in migrate_data else {})
    pci_map.update({s: d for s, d in target.items() if s in vfs})
    migrate_data.pci_dev_map_src_dst = pci_map
    return migrate_data


def check_same_manager(ext: extension.Extension, ctxt, instance,
                       migration, allocs: dict) -> None:
    """NVIDIA's rule, on the destination before anything is claimed.

    NVIDIA supports a vGPU's live migration only between hosts with the
    same vGPU manager version and the same ECC setting (FIELD-NOTES; its
    vGPU user guide). Each GPU provider carries them as traits where NVML
    says them (:func:`~vgpu_nova_ext.inventory.host_traits`): the source's
    GPUs are those of the migration's allocations (Nova's conductor gave
    it the source's), this host's those of ``allocs``. Where either side
    does not say (no NVML), nothing can be compared and nothing is refused.
    """
    if migration is None:
        return
    from nova.scheduler.client import report
    client = report.report_client_singleton()
    try:
        source = _gpu_facts(client, ctxt, client.get_allocs_for_consumer(
            ctxt, migration.uuid).get('allocations', {}))
        here = _gpu_facts(client, ctxt, allocs or {})
    except Exception as exc:
        # Placement answers the conductor that called here: a failure now
        # is a passing one, and the migration itself would meet it.
        LOG.warning('live migration: the vGPU manager versions of the '
                    'source and this host could not be read from '
                    'Placement (%s); not compared', exc, instance=instance)
        return
    problems = []
    for what, src, dst in (('vGPU manager version', source[0], here[0]),
                           ('ECC setting', source[1], here[1])):
        if src and dst and src != dst:
            problems.append('%s %s on the source host (%s), %s on this '
                            'host (%s)' % (what, ', '.join(sorted(src)),
                                           migration.source_compute,
                                           ', '.join(sorted(dst)),
                                           ext.nodename))
    if problems:
        raise nova_exception.MigrationPreCheckError(
            reason='instance %s holds vGPUs, which NVIDIA live migrates only '
                   'between hosts with the same vGPU manager version and '
                   'ECC setting: %s; choose a destination that matches (a '
                   'flavor or the scheduler can require its traits, e.g. '
                   '%s), or use a cold migration (openstack server '
                   'migrate)' % (instance.uuid, '; '.join(problems),
                                 ', '.join(sorted(source[2])) or
                                 'CUSTOM_VGPU_MANAGER_<version>'))


def _gpu_facts(client, ctxt, allocations: dict):
    """The manager versions, ECC modes and their traits of GPU providers.

    Of the GPU providers among ``allocations``: ({versions}, {'on' or
    'off'}, {the traits}).
    """
    versions, ecc, traits = set(), set(), set()
    for rp_uuid, body in sorted(allocations.items()):
        # A GPU provider's units are VGPU or a custom class ([mdev_<type>]
        # mdev_class); the compute node's (VCPU, MEMORY_MB ...) are not
        # asked for.
        resources = (body or {}).get('resources', {})
        if not any(rc == orc.VGPU or rc.startswith(orc.CUSTOM_NAMESPACE)
                   for rc in resources):
            continue
        for trait in client.get_provider_traits(ctxt, rp_uuid).traits:
            version = inventory.manager_version_of(trait)
            if version is not None:
                versions.add(version)
                traits.add(trait)
            elif trait in (inventory.ECC_ON, inventory.ECC_OFF):
                ecc.add('on' if trait == inventory.ECC_ON else 'off')
                traits.add(trait)
    return versions, ecc, traits


def migration_of(migrate_data):
    """The migration record Nova sent with ``migrate_data``, or None."""
    if migrate_data is not None and 'migration' in migrate_data:
        return migrate_data.migration
    return None


def _refuse_old_vfio(ext: extension.Extension, host, instance, vfs,
                     where: str) -> None:
    if host.has_min_version(lv_ver=MIN_VFIO_LIVEMIG_LIBVIRT,
                            hv_ver=MIN_VFIO_LIVEMIG_QEMU,
                            hv_type=libvirt_host.HV_DRIVER_QEMU):
        return
    raise nova_exception.MigrationPreCheckError(
        reason='instance %s holds vGPU VFs of NVIDIA\'s vendor-specific '
               'VFIO (%s), whose live migration needs libvirt >= %s and '
               'QEMU >= %s on both hosts; the %s host (%s) has older ones: '
               'upgrade them, or use a cold migration (openstack server '
               'migrate)' % (
                   instance.uuid, ', '.join(vfs),
                   _version(MIN_VFIO_LIVEMIG_LIBVIRT),
                   _version(MIN_VFIO_LIVEMIG_QEMU), where, ext.nodename))


def _version(parts: tuple[int, ...]) -> str:
    return '.'.join(str(p) for p in parts)
