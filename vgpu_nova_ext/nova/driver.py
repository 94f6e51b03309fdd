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
"""The compute driver: Nova's libvirt driver, with every vGPU decision
handed to vgpu-nova-ext.

Nova's in-tree vGPU code paths stay unused (no type is reported to them),
so the two never manage the same devices. Each override is a few lines
that hand the work to a module of :mod:`vgpu_nova_ext.nova` by job: the
extension's wiring (``extension``), the provider tree and reshape
(``provider_tree``), the device hooks of server operations (``hooks``),
the config drive (``configdrive``), live migration (``live_migration``)
and the periodic reconcile (``reconcile``). nova.conf names the driver
through the shim module ``nova.virt.vgpu_nova_ext_driver``::

    [DEFAULT]
    compute_driver = vgpu_nova_ext_driver.LibvirtVGPUDriver
"""

import contextlib
import threading

from nova.compute import task_states
from nova.virt.libvirt import driver as libvirt_driver
from oslo_log import log as logging
from oslo_utils import excutils

from vgpu_nova_ext import conf as conf_pkg
from vgpu_nova_ext.nova import compat
from vgpu_nova_ext.nova import configdrive
from vgpu_nova_ext.nova import extension
from vgpu_nova_ext.nova import hooks
from vgpu_nova_ext.nova import live_migration as live
from vgpu_nova_ext.nova import provider_tree
from vgpu_nova_ext.nova import reconcile

LOG = logging.getLogger(__name__)
CONF = conf_pkg.CONF


class LibvirtVGPUDriver(libvirt_driver.LibvirtDriver):
    """Nova's libvirt driver with vgpu-nova-ext doing the vGPU work."""

    def __init__(self, virtapi, read_only=False):
        compat.check_nova()
        super().__init__(virtapi, read_only)
        self._vgpu = None
        self._vgpu_lock = threading.Lock()
        self._claiming = threading.local()

    # -- the extension -------------------------------------------------------
    def _vgpu_ext(self) -> extension.Extension:
        with self._vgpu_lock:
            if self._vgpu is None:
                self._vgpu = extension.Extension(
                    self._host.get_hostname(), self._host.get_connection())
            return self._vgpu

    @contextlib.contextmanager
    def _consumer(self, instance: str, rebuild: bool = False):
        """Whose devices ``_allocate_mdevs`` claims in this thread."""
        previous = getattr(self._claiming, 'who', None)
        self._claiming.who = (instance, rebuild)
        try:
            yield
        finally:
            self._claiming.who = previous

    def _node(self) -> str:
        return self._host.get_hostname()

    # -- Nova's in-tree vGPU support, unused ---------------------------------
    def _get_supported_vgpu_types(self):
        # Nova's own vGPU code sees no type, so it never creates, counts or
        # reports a device: vgpu-nova-ext does.
        return []

    # -- Placement -----------------------------------------------------------
    def _update_provider_tree_for_vgpu(self, tree, nodename,
                                       allocations=None):
        provider_tree.update(self._vgpu_ext(), self._host,
                             self.virtapi, tree, nodename,
                             allocations)

    # -- devices -------------------------------------------------------------
    def _allocate_mdevs(self, allocations):
        who = getattr(self._claiming, 'who', None)
        if who is None or not allocations:
            return []
        return hooks.claim(self._vgpu_ext(), *who, allocations)

    def _get_guest_config(self, instance, *args, **kwargs):
        # Every guest config Nova builds (spawn, hard reboot, resize, ...):
        # the flavor's vgpu_nova_ext:display on its vGPUs ...
        conf = super()._get_guest_config(instance, *args, **kwargs)
        hooks.apply_display(self._vgpu_ext(), instance, conf)
        # ... and its vgpu_nova_ext:vgpu_params, before the domain starts.
        hooks.apply_vgpu_params(self._vgpu_ext(), instance, [
            (d.kind, d.device_id) for d in conf.devices
            if isinstance(d, hooks.Hostdev)])
        return conf

    def _guest_add_mdevs(self, guest, chosen_mdevs):
        hooks.add_to_guest(self._vgpu_ext(), guest, chosen_mdevs or ())

    def _get_all_assigned_mediated_devices(self, instance=None):
        return hooks.assigned(self._vgpu_ext(), instance)

    def _detach_mediated_devices(self, guest):
        hooks.detach(self._vgpu_ext(), guest)

    def _get_mdevs_from_guest_config(self, xml):
        return hooks.to_attach(self._vgpu_ext(), xml)

    def _hard_reboot(self, context, instance, network_info, share_info,
                     block_device_info=None, accel_info=None):
        # Hard reboot (and power on, and the resume at host boot) is what
        # operators run to repair an instance. One that should hold vGPUs
        # and holds none here (its devices lost with a broken host state)
        # gets them again from its allocations before the XML is made.
        ext = self._vgpu_ext()
        if hooks.wants_vgpu(ext, instance) and \
                not ext.ledger.of_consumer(instance.uuid):
            allocations = self.virtapi.reportclient.\
                get_allocations_for_consumer(context, instance.uuid)
            with self._consumer(instance.uuid):
                claimed = self._allocate_mdevs(allocations)
            if claimed:
                LOG.warning('the instance held none of its vGPU devices '
                            'here: claimed %s again', ', '.join(claimed),
                            instance=instance)
        return super()._hard_reboot(context, instance, network_info,
                                    share_info,
                                    block_device_info=block_device_info,
                                    accel_info=accel_info)

    def spawn(self, context, instance, *args, **kwargs):
        allocator = self._vgpu_ext().allocator
        before = {e.device_id for e in
                  allocator.ledger.of_consumer(instance.uuid)}
        # An evacuation's spawn runs with the instance still on its source.
        rebuild = instance.task_state == task_states.REBUILD_SPAWNING and \
            instance.node == self._node()
        with self._consumer(instance.uuid, rebuild=rebuild):
            try:
                return super().spawn(context, instance, *args, **kwargs)
            except Exception:
                # A guest that does not start keeps nothing it claimed
                # here: Nova deletes its allocations without calling
                # destroy when an unshelve or an evacuation's spawn fails.
                # What it held before (a rebuild's) stays with it.
                with excutils.save_and_reraise_exception():
                    hooks.log_freed(allocator.release(
                        instance.uuid, keep=before), instance)

    # -- moves (see hooks) ---------------------------------------------------
    def migrate_disk_and_power_off(self, context, instance, *args,
                                   **kwargs):
        result = super().migrate_disk_and_power_off(
            context, instance, *args, **kwargs)
        hooks.hand_over(self._vgpu_ext(), context, instance)
        return result

    def finish_migration(self, context, migration, instance, *args,
                         **kwargs):
        with self._consumer(instance.uuid):
            return super().finish_migration(context, migration, instance,
                                            *args, **kwargs)

    def confirm_migration(self, context, migration, instance, network_info):
        result = super().confirm_migration(context, migration, instance,
                                           network_info)
        hooks.confirm(self._vgpu_ext(), migration, instance, self._node())
        return result

    def finish_revert_migration(self, context, instance, network_info,
                                migration, *args, **kwargs):
        # Before the guest is defined again: Nova reads its devices.
        hooks.take_back(self._vgpu_ext(), migration.uuid, instance)
        return super().finish_revert_migration(
            context, instance, network_info, migration, *args, **kwargs)

    def destroy(self, context, instance, network_info, block_device_info=None,
                destroy_disks=True, destroy_secrets=True):
        result = super().destroy(context, instance, network_info,
                                 block_device_info=block_device_info,
                                 destroy_disks=destroy_disks,
                                 destroy_secrets=destroy_secrets)
        hooks.destroyed(self._vgpu_ext(), context, instance, self._node(),
                        destroy_disks)
        return result

    # -- licensing -----------------------------------------------------------
    def _create_configdrive(self, context, instance, injection_info,
                            rescue=False):
        injection_info = configdrive.with_licensing(
            self._vgpu_ext(), instance, injection_info)
        return super()._create_configdrive(context, instance, injection_info,
                                           rescue=rescue)

    # -- live migration ------------------------------------------------------
    def check_can_live_migrate_source(self, context, instance,
                                      dest_check_data,
                                      block_device_info=None):
        live.check_source(self._vgpu_ext(), self._host, instance,
                          CONF.libvirt.live_migration_permit_post_copy)
        return super().check_can_live_migrate_source(
            context, instance, dest_check_data,
            block_device_info=block_device_info)

    def _get_mdev_types_from_uuids(self, mdev_uuids):
        return live.types_of(self._vgpu_ext(), mdev_uuids)

    def check_source_migrate_data_at_dest(self, ctxt, instance, migrate_data,
                                          migration, limits, allocs):
        source = (migrate_data.source_mdev_types
                  if 'source_mdev_types' in migrate_data else None)
        if not source:
            return super().check_source_migrate_data_at_dest(
                ctxt, instance, migrate_data, migration, limits, allocs)

        live.check_same_manager(self._vgpu_ext(), ctxt, instance,
                                migration, allocs)

        def claim():
            with self._consumer(instance.uuid):
                return self._allocate_mdevs(allocs)
        return live.map_at_destination(self._vgpu_ext(), self._host,
                                       instance, migrate_data, source, claim)

    def live_migration(self, context, instance, dest, post_method,
                       recover_method, block_migration=False,
                       migrate_data=None):
        # As Nova's conductor gave the source's allocations to the
        # migration: the source's devices follow until the guest has moved
        # (freed) or the migration is rolled back (given back).
        migration = live.migration_of(migrate_data)
        allocator = self._vgpu_ext().allocator
        moved = allocator.hand_over(instance.uuid, migration.uuid) \
            if migration is not None else ()
        try:
            return super().live_migration(
                context, instance, dest, post_method, recover_method,
                block_migration=block_migration, migrate_data=migrate_data)
        except Exception:
            with excutils.save_and_reraise_exception():
                if moved:
                    allocator.take_back(migration.uuid, instance.uuid)

    def rollback_live_migration_at_source(self, context, instance,
                                          migrate_data):
        migration = live.migration_of(migrate_data)
        if migration is not None:
            hooks.take_back(self._vgpu_ext(), migration.uuid, instance)
        return super().rollback_live_migration_at_source(
            context, instance, migrate_data)

    def post_live_migration_at_source(self, context, instance, network_info):
        result = super().post_live_migration_at_source(context, instance,
                                                       network_info)
        # The guest runs on the destination, with devices of its own; the
        # source's (the migration's) go.
        hooks.log_freed(self._vgpu_ext().allocator.release_instance(
            instance.uuid), instance)
        return result

    # -- start-up and the periodic task --------------------------------------
    def init_host(self, host):
        super().init_host(host)
        self._reconcile_devices()

    def get_available_resource(self, nodename):
        # Nova's resource tracker asks every periodic task interval: the
        # devices are reconciled as often, so that what no instance here
        # holds any more (an abandoned live-migration claim, an instance
        # deleted behind Nova's back) is freed after orphan_grace_period.
        resources = super().get_available_resource(nodename)
        try:
            self._reconcile_devices(periodic=True)
        except Exception:
            # Resource tracking goes on; the next periodic task tries again.
            LOG.exception('vGPU reconcile failed; retried at the next '
                          'periodic task')
        return resources

    def _reconcile_devices(self, periodic: bool = False) -> None:
        reconcile.reconcile(self._vgpu_ext(), self._host,
                            self.virtapi, periodic=periodic)
