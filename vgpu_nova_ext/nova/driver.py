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
so the two never manage the same devices. This module is the only one that
imports nova; nova.conf names the driver through the shim module
``nova.virt.vgpu_nova_ext_driver``::

    [DEFAULT]
    compute_driver = vgpu_nova_ext_driver.LibvirtVGPUDriver
"""

import contextlib
import threading

from lxml import etree as lxml_etree
from nova.compute import task_states
from nova import context as nova_context
from nova import exception as nova_exception
from nova import objects
from nova.virt import configdrive
from nova.virt.libvirt import config as vconfig
from nova.virt.libvirt import driver as libvirt_driver
from nova.virt.libvirt import host as libvirt_host
from oslo_log import log as logging
from oslo_utils import excutils

from vgpu_nova_ext import conf as conf_pkg
from vgpu_nova_ext.conf import devices as devices_conf
from vgpu_nova_ext.devices import allocator as allocator_mod
from vgpu_nova_ext.devices import factory
from vgpu_nova_ext.devices import guest as guest_mod
from vgpu_nova_ext.devices import ledger as ledger_mod
from vgpu_nova_ext import exception
from vgpu_nova_ext.host import address
from vgpu_nova_ext.host import model
from vgpu_nova_ext import inventory
from vgpu_nova_ext.licensing import render as licensing_render
from vgpu_nova_ext.licensing import settings as licensing
from vgpu_nova_ext import mapping
from vgpu_nova_ext.nova import compat
from vgpu_nova_ext import reshape

LOG = logging.getLogger(__name__)
CONF = conf_pkg.CONF
# Live migration of a VF bound to a kernel VFIO variant driver, as Nova's
# PCI path requires it (MIN_VFIO_PCI_VARIANT_* in Nova 31+).
MIN_VFIO_LIVEMIG_LIBVIRT = (10, 0, 0)
MIN_VFIO_LIVEMIG_QEMU = (8, 2, 2)

#: How old a scan of the host the provider tree may be built from: the
#: resource tracker updates the tree right after get_available_resource,
#: whose reconcile has just scanned (and a device change made here since
#: forces a new scan whatever its age).
SCAN_REUSE_SECONDS = 10.0


class _Hostdev(vconfig.LibvirtConfigGuestDevice):
    """A ``<hostdev>`` made by :mod:`vgpu_nova_ext.devices.guest`."""

    def __init__(self, kind: str, device_id: str) -> None:
        super().__init__(root_name='hostdev')
        self.device_id = device_id
        self._xml = guest_mod.hostdev_xml(kind, device_id)

    def format_dom(self):
        return lxml_etree.fromstring(self._xml)


class _Hidden(bytes):
    """File content that shows as its length when logged.

    Nova logs InjectionInfo with its files; the token must not follow.
    """

    def __repr__(self) -> str:
        return '<%d bytes>' % len(self)

    __str__ = __repr__


class _Extension:
    """The host's backend, plan and allocator, for one compute node."""

    def __init__(self, nodename: str, libvirt_connection=None) -> None:
        self.nodename = nodename
        conf_pkg.validate(CONF)
        self.config = devices_conf.from_nova_conf(CONF)
        # The libvirt backend shares nova-compute's own connection.
        self.devices = factory.open_host(CONF, nodename,
                                         connection=libvirt_connection)
        self.state_path = self.devices.state_path
        self.backend = self.devices.backend
        self.ledger = self.devices.ledger
        self.allocator = self.devices.allocator
        self.carve_mig_layouts()
        self.refresh()

    def carve_mig_layouts(self) -> None:
        """The GPU instances nova.conf declares, before anything is planned.

        A GPU that holds no vGPU is carved; one that holds vGPUs keeps its
        instances (a warning says how to change them). A layout that does
        not fit stops the start, as any configuration error does.
        """
        result = self.allocator.carve_mig_layouts(self.config)
        for problem in result.problems:
            log = LOG.error if problem.severity == mapping.ERROR \
                else LOG.warning
            log('vGPU MIG layout: %s', problem)
        errors = [p for p in result.problems
                  if p.severity == mapping.ERROR]
        if errors:
            raise exception.ConfigError(
                'the declared MIG layouts do not fit this host (run '
                '"vgpu-nova-ext check"): %s' % '; '.join(
                    str(p) for p in errors))

    def refresh(self, existing_uuids: dict[str, str] | None = None,
                allocated: dict[str, int] | None = None
                ) -> inventory.DesiredTree:
        """Plan the host again; returns the desired GPU providers.

        :param allocated: as for :func:`inventory.provider_tree`.
        """
        snapshot = self.allocator.scan(max_age=SCAN_REUSE_SECONDS)
        self.assignment = mapping.assign(self.config, snapshot)
        for problem in self.assignment.problems:
            log = LOG.error if problem.severity == mapping.ERROR \
                else LOG.warning
            log('vGPU configuration: %s', problem)
        if self.assignment.errors:
            raise exception.ConfigError(
                'the vGPU configuration does not fit this host (run '
                '"vgpu-nova-ext check"): %s' % '; '.join(
                    str(p) for p in self.assignment.errors))
        tree = inventory.provider_tree(
            self.nodename, self.assignment, existing_uuids,
            allocated=allocated, owner_trait=compat.features().owner_trait)
        for problem in tree.problems:
            LOG.warning('vGPU inventory: %s', problem)
        self.allocator.targets = allocator_mod.targets(
            self.nodename, self.assignment, existing_uuids)
        return tree


class LibvirtVGPUDriver(libvirt_driver.LibvirtDriver):
    """Nova's libvirt driver with vgpu-nova-ext doing the vGPU work."""

    def __init__(self, virtapi, read_only=False):
        compat.check_nova()
        super().__init__(virtapi, read_only)
        self._vgpu = None
        self._vgpu_lock = threading.Lock()
        self._claiming = threading.local()

    # -- the extension -------------------------------------------------------
    def _vgpu_ext(self) -> _Extension:
        with self._vgpu_lock:
            if self._vgpu is None:
                self._vgpu = _Extension(self._host.get_hostname(),
                                        self._host.get_connection())
            return self._vgpu

    @contextlib.contextmanager
    def _consumer(self, instance: str, rebuild: bool = False):
        """Whose devices ``_allocate_mdevs`` claims in this thread.

        :param rebuild: the claim is a rebuild's on the instance's own
            host, whose failure is no lack of room elsewhere.
        """
        previous = getattr(self._claiming, 'who', None)
        self._claiming.who = (instance, rebuild)
        try:
            yield
        finally:
            self._claiming.who = previous

    # -- Nova's in-tree vGPU support, unused ---------------------------------
    def _get_supported_vgpu_types(self):
        # Nova's own vGPU code sees no type, so it never creates, counts or
        # reports a device: vgpu-nova-ext does.
        return []

    # -- Placement -----------------------------------------------------------
    def _update_provider_tree_for_vgpu(self, provider_tree, nodename,
                                       allocations=None):
        ext = self._vgpu_ext()
        existing = {}
        for rp_uuid in provider_tree.get_provider_uuids(nodename):
            data = provider_tree.data(rp_uuid)
            if data.parent_uuid is not None:
                existing[data.name] = data.uuid
        desired = ext.refresh(existing)
        allocated = self._allocated(provider_tree, nodename, desired)
        if allocated:
            desired = ext.refresh(existing, allocated)
        old = self._old_layout(provider_tree, nodename, desired)
        if old and allocations is None:
            # vGPU inventory in one of Nova's in-tree layouts (on the
            # compute node, or a provider per SR-IOV VF): Nova calls again
            # with the allocations, at start-up.
            LOG.info('vGPU inventory in an old layout (%s): asking Nova '
                     'for a reshape', ', '.join(sorted(
                         provider_tree.data(u).name for u in old)))
            raise nova_exception.ReshapeNeeded()
        for spec in desired.providers:
            if not provider_tree.exists(spec.name):
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
                provider_tree.data(spec.name).traits, spec))
        if old:
            self._reshape(provider_tree, nodename, desired, old, allocations)
        wanted = {p.name for p in desired.providers}
        for name in existing:
            if name in wanted or not provider_tree.exists(name):
                continue
            data = provider_tree.data(name)
            if name.startswith(nodename + '_') and \
                    self._is_gpu_provider(data):
                # The GPU serves nothing now; Nova deletes the provider
                # (it refuses while allocations remain, and logs it). The
                # operator's own traits go with it: flavors requiring them
                # stop finding this host, which is news.
                own = sorted(t for t in self._traits_of(data)
                             if not inventory.is_managed_trait(t))
                LOG.info('removing GPU provider %s: its GPU serves no vGPU '
                         'type now (run "vgpu-nova-ext check" for why)%s',
                         name, '; the operator traits %s go with it' %
                         ', '.join(own) if own else '')
                provider_tree.remove(name)

    def _allocated(self, provider_tree, nodename, desired) -> dict[str, int]:
        """Usage of the GPU providers whose total would go down.

        A total is floored at what is allocated, as the publisher and the
        audit floor it (one tree, whoever writes it): a GPU provider never
        reports less than its consumers hold, nor vanishes under them.
        Placement is read only for such providers (rarely: devices lost or
        capacity lowered); when it cannot be read the total stays where
        it is.
        """
        current = {}
        uuids = {}
        for rp_uuid in provider_tree.get_provider_uuids(nodename):
            data = provider_tree.data(rp_uuid)
            if data.parent_uuid is not None:
                uuids[data.name] = data.uuid
                current[data.name] = {rc: inv['total'] for rc, inv in
                                      data.inventory.items()}
        shrinking = inventory.shrinking(desired, current)
        if not shrinking:
            return {}
        reportclient = self.virtapi.reportclient
        allocated = {}
        for name, rc in shrinking:
            try:
                response = reportclient.get(
                    '/resource_providers/%s/usages' % uuids[name],
                    version='1.9')
                if response.status_code != 200:
                    raise ValueError('HTTP %d' % response.status_code)
                allocated[name] = response.json()['usages'].get(rc, 0)
            except Exception as exc:
                LOG.warning('cannot read the usage of %s in Placement (%s); '
                            'its total stays at %d', name, exc,
                            current[name][rc])
                allocated[name] = current[name][rc]
        return allocated

    @staticmethod
    def _vgpu_classes(desired) -> set[str]:
        """The classes vGPUs are counted in, now or by Nova's layouts."""
        return {p.resource_class for p in desired.providers} | {'VGPU'}

    def _old_layout(self, provider_tree, nodename, desired) -> set[str]:
        """Providers holding vGPU inventory that this layout does not.

        Not a GPU provider of this layout that serves nothing now (other
        owners took its room): that one is removed, not reshaped.
        """
        classes = self._vgpu_classes(desired)
        wanted = {p.uuid for p in desired.providers}
        gpus = {inventory.provider_name(nodename, g.name) for g in
                self._vgpu_ext().allocator.scan(
                    max_age=SCAN_REUSE_SECONDS).gpus}
        return {u for u in provider_tree.get_provider_uuids(nodename)
                if u not in wanted and
                provider_tree.data(u).name not in gpus and
                classes & set(provider_tree.data(u).inventory)}

    def _reshape(self, provider_tree, nodename, desired, old, allocations):
        """Move vGPU allocations onto the GPUs that hold the devices.

        ``allocations`` (Nova's, keyed by consumer) is changed in place, as
        Nova's reshape expects; old inventory leaves the tree.
        """
        ext = self._vgpu_ext()
        gpu_of = {}
        snapshot = ext.backend.scan()
        for device in snapshot.mediated_devices:
            gpu = snapshot.gpu_of_parent(device.parent)
            if gpu is not None:
                gpu_of[device.device_id] = inventory.provider_name(
                    nodename, gpu.name)
        domains, _ = self._domain_devices()
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
        classes = self._vgpu_classes(desired)
        root = provider_tree.data(root_uuid)
        if classes & set(root.inventory):
            provider_tree.update_inventory(nodename, {
                rc: inv for rc, inv in root.inventory.items()
                if rc not in classes})
        for rp_uuid in plan.retired:
            provider_tree.remove(rp_uuid)
        LOG.info('reshaped the vGPU allocations of %d consumer(s) onto the '
                 'GPU providers', len(plan.allocations))

    def _traits_of(self, data) -> set[str]:
        """A provider's traits as Placement has them now.

        Read only when a provider goes (rare): Nova's cache of the tree
        learns traits an operator added only at its next refresh.
        """
        try:
            response = self.virtapi.reportclient.get(
                '/resource_providers/%s/traits' % data.uuid, version='1.6')
            if response.status_code == 200:
                return set(response.json()['traits'])
        except Exception as exc:
            LOG.debug('cannot read the traits of %s (%s): the cached ones '
                      'are named', data.name, exc)
        return set(data.traits)

    @staticmethod
    def _is_gpu_provider(data) -> bool:
        return 'VGPU' in data.inventory or any(
            t.startswith('CUSTOM_' + inventory.TRAIT_PREFIX)
            for t in data.traits)

    # -- devices -----------------------------------------------------------
    def _allocate_mdevs(self, allocations):
        who = getattr(self._claiming, 'who', None)
        if who is None or not allocations:
            return []
        instance, rebuild = who
        ext = self._vgpu_ext()
        try:
            ext.allocator.check_combination(instance, allocations)
            claim = ext.allocator.claim(instance, allocations)
        except exception.CombinationRefused as exc:
            # No other host can meet it: the build ends with the rule as
            # its fault rather than a reschedule.
            raise nova_exception.BuildAbortException(
                instance_uuid=instance, reason=str(exc))
        except exception.ClaimError as exc:
            if rebuild:
                # Nova reads ComputeResourcesUnavailable in a rebuild as a
                # failed evacuation claim: it would leave the server ACTIVE
                # with no guest. The server goes to ERROR with the reason,
                # for the operator to repair (openstack server reboot
                # --hard claims its devices again).
                raise nova_exception.BuildAbortException(
                    instance_uuid=instance, reason=str(exc))
            raise nova_exception.ComputeResourcesUnavailable(
                reason=str(exc))
        return [d.device_id for d in claim.devices]

    def _guest_add_mdevs(self, guest, chosen_mdevs):
        if not chosen_mdevs:
            return
        entries = {e.device_id: e for e in
                   (self._vgpu_ext().ledger.get(d) for d in chosen_mdevs)
                   if e is not None}
        for device_id in chosen_mdevs:
            entry = entries.get(device_id)
            kind = entry.kind if entry else 'mdev'
            guest.add_device(_Hostdev(kind, device_id))

    def _get_all_assigned_mediated_devices(self, instance=None):
        # Nova reads the mdevs from the guest's XML; the ledger knows every
        # device an instance holds, VFs of NVIDIA's vendor VFIO included
        # and also while a suspended guest has them detached. Nova asks at
        # hard reboot, power on, rescue and a resize's revert, to put the
        # same devices in the new XML.
        ledger = self._vgpu_ext().ledger
        if instance is not None:
            return {e.device_id: instance.uuid
                    for e in ledger.of_consumer(instance.uuid)}
        return {e.device_id: ledger.instance_of(e.consumer) or e.consumer
                for e in ledger.all() if e.consumer is not None}

    def _hostdevs_of(self, instance_uuid: str,
                     domain_xml: str) -> list[_Hostdev]:
        """The vGPU devices a suspend detaches and a resume attaches.

        The instance's own, from the ledger, and the mdevs in its domain
        that are not this project's (Cyborg's, which Nova 34 makes for
        accelerator requests): those are treated as Nova treats every mdev.
        """
        ledger = self._vgpu_ext().ledger
        own = [_Hostdev(e.kind, e.device_id)
               for e in ledger.of_consumer(instance_uuid)]
        others = [_Hostdev(model.MDEV, device_id) for device_id in
                  guest_mod.mdevs_in_domain(domain_xml)
                  if ledger.get(device_id) is None]
        return own + others

    def _detach_mediated_devices(self, guest):
        # At suspend: libvirt cannot save the memory of a guest holding a
        # vGPU. The devices stay the instance's (resume attaches them
        # again); only those the guest has are detached.
        xml = guest.get_xml_desc()
        attached = set(guest_mod.devices_in_domain(xml))
        for device in self._hostdevs_of(guest.uuid, xml):
            if device.device_id not in attached:
                continue
            try:
                guest.detach_device(device, live=True)
            except libvirt_driver.libvirt.libvirtError as exc:
                if exc.get_error_code() == \
                        libvirt_driver.libvirt.VIR_ERR_CONFIG_UNSUPPORTED:
                    raise nova_exception.InstanceFaultRollback(
                        nova_exception.InstanceSuspendFailure(
                            reason='this libvirt cannot detach the vGPU '
                                   'devices a suspend needs detached'))
                raise

    def _get_mdevs_from_guest_config(self, xml):
        # At resume: what to attach again, from the ledger (a guest's XML
        # lists no VF of NVIDIA's vendor VFIO as a vGPU).
        uuid = lxml_etree.fromstring(xml.encode()).findtext('uuid')
        return self._hostdevs_of(uuid, xml) if uuid else []

    def _hard_reboot(self, context, instance, network_info, share_info,
                     block_device_info=None, accel_info=None):
        # Hard reboot (and power on, and the resume at host boot) is what
        # operators run to repair an instance. One that should hold vGPUs
        # and holds none here (its devices lost with a broken host state)
        # gets them again from its allocations before the XML is made.
        ext = self._vgpu_ext()
        if self._wants_vgpu(instance) and \
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

    def _wants_vgpu(self, instance) -> bool:
        """Whether the flavor asks for a vGPU class this host serves."""
        classes = {t.resource_class for t in
                   self._vgpu_ext().allocator.targets.values()}
        for key, value in (instance.flavor.extra_specs or {}).items():
            group, _, resource_class = key.partition(':')
            if group.startswith('resources') and \
                    resource_class in classes and value not in ('0', ''):
                return True
        return False

    def spawn(self, context, instance, *args, **kwargs):
        allocator = self._vgpu_ext().allocator
        before = {e.device_id for e in
                  allocator.ledger.of_consumer(instance.uuid)}
        # An evacuation's spawn runs with the instance still on its source.
        rebuild = instance.task_state == task_states.REBUILD_SPAWNING and \
            instance.node == self._host.get_hostname()
        with self._consumer(instance.uuid, rebuild=rebuild):
            try:
                return super().spawn(context, instance, *args, **kwargs)
            except Exception:
                # A guest that does not start keeps nothing it claimed
                # here: Nova deletes its allocations without calling
                # destroy when an unshelve or an evacuation's spawn fails.
                # What it held before (a rebuild's) stays with it.
                with excutils.save_and_reraise_exception():
                    self._log_freed(allocator.release(
                        instance.uuid, keep=before), instance)

    # -- moves -------------------------------------------------------------
    # Devices follow Nova's allocations (see devices/allocator.py): the
    # source's go to the migration when a cold migration or resize begins,
    # the instance claims its own where it lands (the same host too), the
    # confirmation (on the source only) frees the migration's, a revert
    # frees the destination's and gives the migration's back.
    def migrate_disk_and_power_off(self, context, instance, *args,
                                   **kwargs):
        result = super().migrate_disk_and_power_off(
            context, instance, *args, **kwargs)
        migration = self._migration_of(context, instance)
        if migration is not None:
            moved = self._vgpu_ext().allocator.hand_over(instance.uuid,
                                                         migration.uuid)
            if moved:
                LOG.info('vGPU devices %s held by migration %s until it is '
                         'confirmed or reverted', ', '.join(moved),
                         migration.uuid, instance=instance)
        return result

    def finish_migration(self, context, migration, instance, *args,
                         **kwargs):
        with self._consumer(instance.uuid):
            return super().finish_migration(context, migration, instance,
                                            *args, **kwargs)

    def confirm_migration(self, context, migration, instance, network_info):
        result = super().confirm_migration(context, migration, instance,
                                           network_info)
        allocator = self._vgpu_ext().allocator
        self._log_freed(allocator.release(migration.uuid), instance)
        if migration.dest_node != self._host.get_hostname():
            # The instance runs on another host now: nothing here is its
            # (a move begun before its devices followed its allocations).
            self._log_freed(allocator.release_instance(instance.uuid),
                            instance)
        return result

    def finish_revert_migration(self, context, instance, network_info,
                                migration, *args, **kwargs):
        # Before the guest is defined again: Nova reads its devices.
        moved = self._vgpu_ext().allocator.take_back(migration.uuid,
                                                     instance.uuid)
        if moved:
            LOG.info('vGPU devices %s are the instance\'s again',
                     ', '.join(moved), instance=instance)
        return super().finish_revert_migration(
            context, instance, network_info, migration, *args, **kwargs)

    def destroy(self, context, instance, network_info, block_device_info=None,
                destroy_disks=True, destroy_secrets=True):
        result = super().destroy(context, instance, network_info,
                                 block_device_info=block_device_info,
                                 destroy_disks=destroy_disks,
                                 destroy_secrets=destroy_secrets)
        allocator = self._vgpu_ext().allocator
        task = instance.task_state
        evacuated = task == task_states.REBUILDING and \
            self._evacuated_from_here(context, instance)
        if task == task_states.RESIZE_REVERTING:
            # A revert, on the destination (on one host the migration
            # holds the source's devices): the instance's here go.
            self._log_freed(allocator.release(instance.uuid), instance)
        elif task == task_states.REBUILDING and not evacuated:
            # Nova destroys the guest and spawns it again on this host with
            # the same allocations: the devices stay, spawn's claim finds
            # them (same UUIDs, nothing removed and re-created).
            pass
        elif destroy_disks or evacuated or \
                instance.node != self._host.get_hostname():
            # Deleted, shelved-offloaded, or evacuated while this host was
            # down (Nova destroys it here when the host comes back, keeping
            # disks that sit on shared storage, the evacuation finished or
            # still under way; the devices go regardless).
            self._log_freed(allocator.release_instance(instance.uuid),
                            instance)
        return result

    @staticmethod
    def _migration_of(context, instance):
        """The instance's move under way, or None."""
        mig_context = instance.migration_context
        if mig_context is None:
            return None
        return objects.Migration.get_by_id(context,
                                           mig_context.migration_id)

    def _evacuated_from_here(self, context, instance) -> bool:
        """Whether an evacuation of the instance from this host is on.

        Nova destroys such a guest when this host comes back, the
        evacuation possibly still under way (its task REBUILDING, as a
        rebuild on this host's). Asked only then, from Nova's records.
        """
        migrations = objects.MigrationList.get_by_filters(context, {
            'instance_uuid': instance.uuid,
            'migration_type': 'evacuation',
            'status': ['accepted', 'pre-migrating', 'done']})
        node = self._host.get_hostname()
        return any(m.source_node == node for m in migrations)

    @staticmethod
    def _log_freed(freed, instance) -> None:
        if freed:
            LOG.info('freed vGPU devices %s', ', '.join(freed),
                     instance=instance)

    # -- licensing ---------------------------------------------------------
    def licensing_files(self, instance) -> list[tuple[str, bytes]]:
        """The config drive files that license ``instance``'s vGPUs."""
        ext = self._vgpu_ext()
        types = sorted({e.type_id for e in
                        ext.ledger.of_consumer(instance.uuid)})
        if not types:
            return []
        settings = licensing.load(CONF, ext.config)
        return [(path, _Hidden(data)) for path, data in
                licensing_render.config_drive_files(settings, types,
                                                    instance.os_type)]

    def _create_configdrive(self, context, instance, injection_info,
                            rescue=False):
        files = (self.licensing_files(instance)
                 if configdrive.required_by(instance) else [])
        if files:
            LOG.info('adding the vGPU licensing files %s to the config '
                     'drive', ', '.join(p for p, _ in files),
                     instance=instance)
            injection_info = injection_info._replace(
                files=list(injection_info.files or []) + files)
        return super()._create_configdrive(context, instance, injection_info,
                                           rescue=rescue)

    # -- live migration ----------------------------------------------------
    # Nova's own mdev live migration (libvirt >= 8.6.0, QEMU >= 8.1.0 on
    # both hosts) with the ledger as the source of truth: the destination
    # claims devices of the same types for the instance before the guest
    # moves, Nova rewrites the migrated XML to them, the source frees its
    # own once the guest runs on the destination, a rollback frees the
    # destination's. A VF of NVIDIA's vendor-specific VFIO goes the same
    # way; its <hostdev> is rewritten by Nova's PCI path
    # (pci_dev_map_src_dst), under that path's own minimums, checked on both
    # hosts.
    def _vfs_of(self, instance_uuid: str) -> list[str]:
        return [e.device_id for e in
                self._vgpu_ext().ledger.of_consumer(instance_uuid)
                if e.kind == model.VF]

    def _refuse_old_vfio_migration(self, instance, vfs, where: str) -> None:
        if self._host.has_min_version(lv_ver=MIN_VFIO_LIVEMIG_LIBVIRT,
                                      hv_ver=MIN_VFIO_LIVEMIG_QEMU,
                                      hv_type=libvirt_host.HV_DRIVER_QEMU):
            return
        raise nova_exception.MigrationPreCheckError(
            reason='instance %s holds vGPU VFs of NVIDIA\'s vendor-specific '
                   'VFIO (%s), whose live migration needs libvirt >= %s and '
                   'QEMU >= %s on both hosts; the %s host (%s) has older '
                   'ones: upgrade them, or use a cold migration (openstack '
                   'server migrate)' % (
                       instance.uuid, ', '.join(vfs),
                       _version(MIN_VFIO_LIVEMIG_LIBVIRT),
                       _version(MIN_VFIO_LIVEMIG_QEMU), where,
                       self._vgpu_ext().nodename))

    def check_can_live_migrate_source(self, context, instance,
                                      dest_check_data,
                                      block_device_info=None):
        held = self._vgpu_ext().ledger.of_consumer(instance.uuid)
        if held and CONF.libvirt.live_migration_permit_post_copy:
            # QEMU refuses a VFIO device's migration in post-copy mode, and
            # Nova would switch to it when the migration is slow.
            raise nova_exception.MigrationPreCheckError(
                reason='instance %s holds vGPUs (%s), which cannot be live '
                       'migrated in post-copy mode; set [libvirt] '
                       'live_migration_permit_post_copy = False on %s (QEMU '
                       'refuses "VFIO migration ... with postcopy migration")'
                       % (instance.uuid,
                          ', '.join(e.device_id for e in held),
                          self._vgpu_ext().nodename))
        vfs = self._vfs_of(instance.uuid)
        if vfs:
            self._refuse_old_vfio_migration(instance, vfs, 'source')
        return super().check_can_live_migrate_source(
            context, instance, dest_check_data,
            block_device_info=block_device_info)

    def _get_mdev_types_from_uuids(self, mdev_uuids):
        ledger = self._vgpu_ext().ledger
        return {e.device_id: e.type_id for e in
                (ledger.get(u) for u in mdev_uuids) if e is not None}

    def check_source_migrate_data_at_dest(self, ctxt, instance, migrate_data,
                                          migration, limits, allocs):
        source = (migrate_data.source_mdev_types
                  if 'source_mdev_types' in migrate_data else None)
        if not source:
            return super().check_source_migrate_data_at_dest(
                ctxt, instance, migrate_data, migration, limits, allocs)
        vfs = [d for d in source if address.normalize_pci_address(d)]
        if vfs:
            self._refuse_old_vfio_migration(instance, vfs, 'destination')
        served = {t.type_id for t in
                  self._vgpu_ext().allocator.targets.values()}
        missing = sorted(set(source.values()) - served)
        if missing:
            raise nova_exception.MigrationPreCheckError(
                reason='instance %s holds vGPUs of type %s, which no GPU '
                       'of this host serves' % (instance.uuid,
                                                ', '.join(missing)))
        with self._consumer(instance.uuid):
            try:
                claimed = self._allocate_mdevs(allocs)
            except nova_exception.ComputeResourcesUnavailable as exc:
                raise nova_exception.MigrationPreCheckError(
                    reason=exc.format_message())
        types = self._get_mdev_types_from_uuids(claimed)
        free = sorted(claimed)
        target = {}
        for src_mdev, src_type in sorted(source.items()):
            match = next((d for d in free if types.get(d) == src_type), None)
            if match is not None:
                free.remove(match)
                target[src_mdev] = match
        if len(target) != len(source):
            self._log_freed(self._vgpu_ext().allocator.release(
                instance.uuid), instance)
            raise nova_exception.MigrationPreCheckError(
                reason='instance %s: the devices claimed here (%s) do not '
                       'match its devices on the source (%s)' % (
                           instance.uuid, types, source))
        LOG.info('live migration: source vGPU devices map to %s here',
                 target, instance=instance)
        # An mdev's <hostdev> is rewritten by its UUID, a VF's by its PCI
        # address (Nova's PCI path, beside any PCI device of the flavor's).
        migrate_data.target_mdevs = {s: d for s, d in target.items()
                                     if s not in vfs}
        pci_map = dict(migrate_data.pci_dev_map_src_dst
                       if 'pci_dev_map_src_dst' in migrate_data else {})
        pci_map.update({s: d for s, d in target.items() if s in vfs})
        migrate_data.pci_dev_map_src_dst = pci_map
        return migrate_data

    @staticmethod
    def _live_migration_of(migrate_data):
        if migrate_data is not None and 'migration' in migrate_data:
            return migrate_data.migration
        return None

    def live_migration(self, context, instance, dest, post_method,
                       recover_method, block_migration=False,
                       migrate_data=None):
        # As Nova's conductor gave the source's allocations to the
        # migration: the source's devices follow until the guest has moved
        # (freed) or the migration is rolled back (given back).
        migration = self._live_migration_of(migrate_data)
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
        migration = self._live_migration_of(migrate_data)
        if migration is not None:
            self._vgpu_ext().allocator.take_back(migration.uuid,
                                                 instance.uuid)
        return super().rollback_live_migration_at_source(
            context, instance, migrate_data)

    def post_live_migration_at_source(self, context, instance, network_info):
        result = super().post_live_migration_at_source(context, instance,
                                                       network_info)
        # The guest runs on the destination, with devices of its own; the
        # source's (the migration's) go.
        self._log_freed(self._vgpu_ext().allocator.release_instance(
            instance.uuid), instance)
        return result

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

    def _domain_devices(self, read_xml: bool = True
                        ) -> tuple[dict[str, list[str]], bool]:
        """The vGPU devices of the host's domains.

        :param read_xml: False: only the domains' UUIDs (no device lists),
            without reading every domain's XML.
        :returns: {domain uuid: device ids in its XML}, and whether every
            domain could be read.
        """
        found = {}
        every_domain = True
        for guest in self._host.list_guests(only_running=False):
            if not read_xml:
                found[guest.uuid] = []
                continue
            try:
                found[guest.uuid] = guest_mod.devices_in_domain(
                    guest.get_xml_desc())
            except Exception as exc:  # a domain vanishing while listed
                LOG.warning('cannot read the domain %s (%s): its vGPU '
                            'devices are not counted as used this time',
                            guest.uuid, exc)
                every_domain = False
        return found, every_domain

    def _live_consumers(self, guests: dict[str, list[str]]
                        ) -> set[str] | None:
        """Consumers whose devices stay; None: cannot tell this time.

        Those with a domain here and, when the ledger names others, those
        that hold allocations on this compute node's providers in
        Placement: what Nova allocated is what a device stands for. A long
        live migration keeps its destination's devices (the instance holds
        the destination's allocations); one that failed or was abandoned
        does not (Nova gave the allocations back to the source).

        Placement is asked only when a consumer in the ledger has no
        domain here, which is rare: on most periodic tasks nothing is
        asked. Not Nova's database: a driver in nova-compute reads it
        through the conductor, and the read would hold up the periodic
        task that calls it (in Nova's test harness it waits on the
        harness's cell lock, which a test running periodic tasks from a
        live migration holds: a deadlock seen under load).
        """
        live = set(guests)
        ledger = self._vgpu_ext().ledger
        unknown = {ledger.instance_of(e.consumer) or e.consumer
                   for e in ledger.in_state(ledger_mod.ACTIVE,
                                            ledger_mod.CREATING)
                   if e.consumer is not None} - live
        if not unknown:
            return live
        reportclient = self.virtapi.reportclient
        context = nova_context.get_admin_context()
        try:
            here = {p['uuid'] for p in reportclient.get_providers_in_tree(
                context, self._host.get_node_uuid())}
            for consumer in sorted(unknown):
                allocations = reportclient.get_allocs_for_consumer(
                    context, consumer)['allocations']
                if here & set(allocations):
                    live.add(consumer)
        except Exception as exc:
            # Nothing is judged gone on a failed read.
            LOG.warning('cannot ask Placement which vGPU consumers hold '
                        'allocations here (%s); no device is freed as an '
                        'orphan this time', exc)
            return None
        return live

    def _reconcile_devices(self, periodic: bool = False) -> None:
        """Make host and ledger agree.

        At start-up (before Nova resumes guests) and every periodic task:
        devices come back after a host reboot, half-done work is finished,
        devices that guests already use are adopted, devices of instances
        gone from this host are freed after the grace period.
        """
        ext = self._vgpu_ext()
        # The guests' XML tells which domain uses which device: needed to
        # adopt a device the ledger does not know and to spot a guest using
        # another's. At start-up it is read whatever the host holds; in a
        # periodic task only when the host holds a device the ledger does
        # not know, since the domains' UUIDs are enough to tell which
        # consumers live (reading hundreds of domains' XML every minute is
        # most of the cost of the task otherwise). This is the periodic
        # task's one scan of the host: the reconcile and the provider tree
        # update that follows reuse it.
        on_host = {d.device_id for d in ext.allocator.scan().mediated_devices}
        read_xml = not periodic or bool(
            on_host - {e.device_id for e in ext.ledger.all()})
        guests, every_domain = self._domain_devices(read_xml)
        live = self._live_consumers(guests)
        # Only with every domain read is a device no domain uses unused.
        for action in ext.allocator.reconcile(
                live_consumers=live, guest_devices=guests,
                adopt_unused=every_domain and read_xml,
                scan_max_age=SCAN_REUSE_SECONDS):
            # Foreign devices are news at start-up, not every minute.
            log = LOG.debug if periodic and action.kind == 'foreign' \
                else LOG.info
            log('vGPU reconcile: %s %s: %s', action.kind, action.device_id,
                action.detail)


def _version(parts: tuple[int, ...]) -> str:
    return '.'.join(str(p) for p in parts)
