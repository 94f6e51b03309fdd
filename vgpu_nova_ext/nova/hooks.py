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
"""What the driver does with vGPU devices at each server operation.

The driver's overrides call these with what they need. Devices follow
Nova's allocations (see :mod:`vgpu_nova_ext.devices.allocator`): a
device's consumer is the Placement consumer of the allocation it stands
for, the instance or, during a move, its migration.
"""

from lxml import etree as lxml_etree
from nova.compute import task_states
from nova import exception as nova_exception
from nova import objects
from nova.virt.libvirt import config as vconfig
from nova.virt.libvirt import driver as libvirt_driver
from oslo_log import log as logging

from vgpu_nova_ext.devices import guest as guest_mod
from vgpu_nova_ext import exception
from vgpu_nova_ext.host import model
from vgpu_nova_ext.nova import extension
from vgpu_nova_ext.nova import extra_specs

LOG = logging.getLogger(__name__)


class Hostdev(vconfig.LibvirtConfigGuestDevice):
    """A ``<hostdev>`` made by :mod:`vgpu_nova_ext.devices.guest`."""

    def __init__(self, kind: str, device_id: str) -> None:
        super().__init__(root_name='hostdev')
        self.kind = kind
        self.device_id = device_id
        self._xml = guest_mod.hostdev_xml(kind, device_id)

    def show(self, ramfb: bool = False) -> None:
        """The device drives the guest's console (and a boot console)."""
        self._xml = guest_mod.hostdev_xml(self.kind, self.device_id,
                                          display=True, ramfb=ramfb)

    def format_dom(self):
        return lxml_etree.fromstring(self._xml)


def _flavor_vgpu(instance) -> extra_specs.FlavorVgpu:
    """The flavor's ``vgpu_nova_ext:`` extra specs, or the build ends.

    :raises BuildAbortException: naming the extra spec and why: no other
        host would do better with the same flavor.
    """
    try:
        return extra_specs.read(instance.flavor.extra_specs)
    except exception.FlavorSpecError as exc:
        raise nova_exception.BuildAbortException(
            instance_uuid=instance.uuid, reason=str(exc))


def _type_infos(ext: extension.Extension) -> dict:
    """{type id: vendor's TypeInfo} of the types the host serves now."""
    assignment = getattr(ext, 'assignment', None)
    return {a.type_id: a.type_info
            for a in (assignment.gpus if assignment else ())}


def apply_display(ext: extension.Extension, instance, guest_conf) -> None:
    """The flavor's ``vgpu_nova_ext:display`` on the guest's vGPUs.

    :raises BuildAbortException: naming the extra spec and why (a wrong
        value, a VF, a type without a display): no other host would do
        better with the same flavor.
    """
    devices = [d for d in guest_conf.devices if isinstance(d, Hostdev)]
    if not devices:
        return
    wanted = _flavor_vgpu(instance).display
    if wanted is extra_specs.Display.OFF:
        return
    infos = _type_infos(ext)
    for device in devices:
        entry = ext.ledger.get(device.device_id)
        type_id = entry.type_id if entry is not None else None
        info = infos.get(type_id)
        problem = extra_specs.display_problem(
            device.kind, type_id, info.series if info else None)
        if problem:
            raise nova_exception.BuildAbortException(
                instance_uuid=instance.uuid, reason=problem)
        device.show(ramfb=wanted is extra_specs.Display.RAMFB)
    LOG.info('vGPU display on (%s) for %s', wanted.value,
             ', '.join(d.device_id for d in devices), instance=instance)


def apply_vgpu_params(ext: extension.Extension, instance,
                      devices: list[tuple[str, str]]) -> None:
    """The flavor's ``vgpu_nova_ext:vgpu_params:*`` on its vGPUs, now.

    Before the guest starts (each guest config Nova builds, and a live
    migration's destination): every device gets exactly the flavor's
    parameters, none where it asks none, so that a device made again
    (after a reboot, a repair) or kept from another guest carries no other.
    Only where the device's parameters differ: a guest holding vGPUs whose
    flavor asks none costs a read per device.

    :param devices: (kind, device id) of each of the guest's vGPUs here.
    :raises BuildAbortException: naming the extra spec and why (a wrong
        value, a parameter the type does not take, a device that refused).
    """
    if not devices:
        return
    wanted = _flavor_vgpu(instance).vgpu_params
    infos = _type_infos(ext)
    for kind, device_id in devices:
        current = ext.backend.read_vgpu_params(kind, device_id)
        if current is None:
            if wanted:
                raise nova_exception.BuildAbortException(
                    instance_uuid=instance.uuid, reason=(
                        'the flavor sets vGPU plugin parameters (%s), but '
                        'device %s has no nvidia/vgpu_params: not a vGPU '
                        'of a vendor that takes them' % (
                            ', '.join('%s=%s' % p for p in wanted),
                            device_id)))
            continue
        entry = ext.ledger.get(device_id)
        info = infos.get(entry.type_id) if entry is not None else None
        if wanted and info is not None:
            plugin = ext.allocator.vendors.by_name(info.vendor) \
                if info.vendor else None
            problem = plugin.vgpu_params_problem(info, wanted) \
                if plugin is not None else None
            if problem:
                raise nova_exception.BuildAbortException(
                    instance_uuid=instance.uuid, reason=(
                        'flavor extra specs %s*: %s' % (
                            extra_specs.VGPU_PARAMS, problem)))
        if current == wanted:
            continue
        try:
            ext.backend.set_vgpu_params(kind, device_id, wanted)
        except exception.DeviceBusyError as exc:
            # A guest still runs on it: a config built beside the running
            # domain (a rescue's). Its parameters stay until its next start.
            LOG.warning('vGPU parameters of %s not written while it is in '
                        'use: %s', device_id, exc, instance=instance)
            continue
        except (exception.DeviceError, NotImplementedError) as exc:
            raise nova_exception.BuildAbortException(
                instance_uuid=instance.uuid, reason=(
                    'the vGPU parameters of device %s could not be '
                    'written: %s' % (device_id, exc)))
        if entry is not None:
            try:
                # mdevctl's definition too, where one is kept: a device it
                # makes again at boot gets them.
                ext.allocator.mdevctl.write(entry, wanted)
            except (OSError, exception.DeviceError) as exc:
                # (DeviceError: a refused write, InvalidHostWrite included.)
                # The device has them; this service writes them again
                # before the guest's next start in any case.
                LOG.warning('mdevctl definition of %s not updated with its '
                            'vGPU parameters: %s', device_id, exc,
                            instance=instance)
        LOG.info('vGPU parameters of %s: %s', device_id,
                 ', '.join('%s=%s' % p for p in wanted) or 'none',
                 instance=instance)


# -- claims ------------------------------------------------------------------
def claim(ext: extension.Extension, instance: str, rebuild: bool,
          allocations) -> list[str]:
    """The devices of ``instance``'s allocations here (Nova's ids).

    :param rebuild: the claim is a rebuild's on the instance's own host,
        whose failure is no lack of room elsewhere.
    """
    try:
        ext.allocator.check_combination(instance, allocations)
        claimed = ext.allocator.claim(instance, allocations)
    except exception.CombinationRefused as exc:
        # No other host can meet it: the build ends with the rule as its
        # fault rather than a reschedule.
        raise nova_exception.BuildAbortException(
            instance_uuid=instance, reason=str(exc))
    except exception.ClaimError as exc:
        if rebuild:
            # Nova reads ComputeResourcesUnavailable in a rebuild as a
            # failed evacuation claim: it would leave the server ACTIVE
            # with no guest. The server goes to ERROR with the reason, for
            # the operator to repair (openstack server reboot --hard claims
            # its devices again).
            raise nova_exception.BuildAbortException(
                instance_uuid=instance, reason=str(exc))
        raise nova_exception.ComputeResourcesUnavailable(reason=str(exc))
    return [d.device_id for d in claimed.devices]


def wants_vgpu(ext: extension.Extension, instance) -> bool:
    """Whether the flavor asks for a vGPU class this host serves."""
    classes = {t.resource_class for t in ext.allocator.targets.values()}
    for key, value in (instance.flavor.extra_specs or {}).items():
        group, _, resource_class = key.partition(':')
        if group.startswith('resources') and \
                resource_class in classes and value not in ('0', ''):
            return True
    return False


def log_freed(freed, instance) -> None:
    if freed:
        LOG.info('freed vGPU devices %s', ', '.join(freed),
                 instance=instance)


# -- the guest's XML ---------------------------------------------------------
def add_to_guest(ext: extension.Extension, guest, chosen) -> None:
    """A ``<hostdev>`` per device claimed, of the kind the ledger says."""
    entries = {e.device_id: e for e in
               (ext.ledger.get(d) for d in chosen) if e is not None}
    for device_id in chosen:
        entry = entries.get(device_id)
        guest.add_device(Hostdev(entry.kind if entry else 'mdev',
                                 device_id))


def assigned(ext: extension.Extension, instance=None) -> dict[str, str]:
    """{device id: instance} of ``instance`` (or of every consumer).

    Nova reads the mdevs from the guest's XML; the ledger knows every
    device an instance holds, VFs of NVIDIA's vendor VFIO included and also
    while a suspended guest has them detached. Nova asks at hard reboot,
    power on, rescue and a resize's revert, to put the same devices in the
    new XML.
    """
    ledger = ext.ledger
    if instance is not None:
        return {e.device_id: instance.uuid
                for e in ledger.of_consumer(instance.uuid)}
    return {e.device_id: ledger.instance_of(e.consumer) or e.consumer
            for e in ledger.all() if e.consumer is not None}


def hostdevs_of(ext: extension.Extension, instance_uuid: str,
                domain_xml: str) -> list[Hostdev]:
    """The vGPU devices a suspend detaches and a resume attaches.

    The instance's own, from the ledger, and the mdevs in its domain that
    are not this project's (Cyborg's, which Nova 34 makes for accelerator
    requests): those are treated as Nova treats every mdev.
    """
    ledger = ext.ledger
    own = [Hostdev(e.kind, e.device_id)
           for e in ledger.of_consumer(instance_uuid)]
    others = [Hostdev(model.MDEV, device_id) for device_id in
              guest_mod.mdevs_in_domain(domain_xml)
              if ledger.get(device_id) is None]
    return own + others


def detach(ext: extension.Extension, guest) -> None:
    """At suspend: libvirt cannot save a guest holding a vGPU.

    The devices stay the instance's (resume attaches them again); only
    those the guest has are detached.
    """
    xml = guest.get_xml_desc()
    attached = set(guest_mod.devices_in_domain(xml))
    for device in hostdevs_of(ext, guest.uuid, xml):
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


def to_attach(ext: extension.Extension, xml: str) -> list[Hostdev]:
    """At resume: what to attach again, from the ledger.

    A guest's XML lists no VF of NVIDIA's vendor VFIO as a vGPU.
    """
    uuid = lxml_etree.fromstring(xml.encode()).findtext('uuid')
    return hostdevs_of(ext, uuid, xml) if uuid else []


# -- moves -------------------------------------------------------------------
# The source's devices go to the migration when a cold migration or resize
# begins, the instance claims its own where it lands (the same host too),
# the confirmation (on the source only) frees the migration's, a revert
# frees the destination's and gives the migration's back.
def hand_over(ext: extension.Extension, context, instance) -> None:
    """A cold migration or resize begins: the migration holds them."""
    migration = _migration_of(context, instance)
    if migration is None:
        return
    moved = ext.allocator.hand_over(instance.uuid, migration.uuid)
    if moved:
        LOG.info('vGPU devices %s held by migration %s until it is '
                 'confirmed or reverted', ', '.join(moved),
                 migration.uuid, instance=instance)


def confirm(ext: extension.Extension, migration, instance,
            node: str) -> None:
    """On the source: the migration's devices go."""
    log_freed(ext.allocator.release(migration.uuid), instance)
    if migration.dest_node != node:
        # The instance runs on another host now: nothing here is its (a
        # move begun before its devices followed its allocations).
        log_freed(ext.allocator.release_instance(instance.uuid), instance)


def take_back(ext: extension.Extension, migration_uuid: str,
              instance) -> None:
    """A revert or a rollback: the migration's devices are the instance's."""
    moved = ext.allocator.take_back(migration_uuid, instance.uuid)
    if moved:
        LOG.info('vGPU devices %s are the instance\'s again',
                 ', '.join(moved), instance=instance)


def destroyed(ext: extension.Extension, context, instance, node: str,
              destroy_disks: bool) -> None:
    """After Nova destroyed the guest here: what its devices become."""
    allocator = ext.allocator
    task = instance.task_state
    evacuated = task == task_states.REBUILDING and \
        _evacuated_from_here(context, instance, node)
    if task == task_states.RESIZE_REVERTING:
        # A revert, on the destination (on one host the migration holds
        # the source's devices): the instance's here go.
        log_freed(allocator.release(instance.uuid), instance)
    elif task == task_states.REBUILDING and not evacuated:
        # Nova destroys the guest and spawns it again on this host with the
        # same allocations: the devices stay, spawn's claim finds them
        # (same UUIDs, nothing removed and re-created).
        pass
    elif destroy_disks or evacuated or instance.node != node:
        # Deleted, shelved-offloaded, or evacuated while this host was down
        # (Nova destroys it here when the host comes back, keeping disks
        # that sit on shared storage, the evacuation finished or still
        # under way; the devices go regardless).
        log_freed(allocator.release_instance(instance.uuid), instance)


def _migration_of(context, instance):
    """The instance's move under way, or None."""
    mig_context = instance.migration_context
    if mig_context is None:
        return None
    return objects.Migration.get_by_id(context, mig_context.migration_id)


def _evacuated_from_here(context, instance, node: str) -> bool:
    """Whether an evacuation of the instance from this host is on.

    Nova destroys such a guest when this host comes back, the evacuation
    possibly still under way (its task REBUILDING, as a rebuild on this
    host's). Asked only then, from Nova's records.
    """
    migrations = objects.MigrationList.get_by_filters(context, {
        'instance_uuid': instance.uuid,
        'migration_type': 'evacuation',
        'status': ['accepted', 'pre-migrating', 'done']})
    return any(m.source_node == node for m in migrations)
