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
"""Reconcile: what makes host and ledger agree, planned then carried out.

:func:`plan` reads the host and the ledger and returns a typed step per
device (:class:`Kind` says what, :class:`Action` says it to an operator);
:func:`apply` carries one out through the allocator's own operations, by
one dispatch on the kind. The allocator calls both under its lock
(:meth:`vgpu_nova_ext.devices.allocator.Allocator.reconcile`).
"""

import dataclasses
import enum
import typing

from oslo_log import log as logging

from vgpu_nova_ext.devices import checkpoints
from vgpu_nova_ext.devices import ledger as ledger_mod
from vgpu_nova_ext.devices import mdevctl
from vgpu_nova_ext import exception
from vgpu_nova_ext.host import base as host_base
from vgpu_nova_ext.host import model

LOG = logging.getLogger(__name__)


class Devices(typing.Protocol):
    """What reconcile uses of the allocator (no import back to it)."""

    ledger: ledger_mod.Ledger
    backend: host_base.HostBackend
    targets: dict
    orphan_grace: float
    mdevctl: mdevctl.Definitions

    def scan(self, max_age: float = 0.0) -> model.HostSnapshot:
        """The host, as the allocator scans it."""

    def _create_on_host(self, parent: str, type_id: str,
                        device_id: str) -> None:
        """A device made on the host."""

    def _remove_from_host(self, device_id: str) -> None:
        """A device taken off the host (the ledger untouched)."""

    def _remove(self, entry: ledger_mod.Entry) -> None:
        """A recorded device removed, intent first."""

    def _release(self, entries) -> tuple[str, ...]:
        """Recorded devices freed by the free-device policy."""


class Kind(enum.StrEnum):
    """What reconcile does to one device."""

    FINISH_CREATE = 'finish-create'
    """Made before a crash: recorded as its consumer's."""
    DROP_INTENT = 'drop-intent'
    """An intent that never happened (or a removal already done)."""
    FINISH_REMOVE = 'finish-remove'
    CONFLICT = 'conflict'
    """The ledger gives it to one consumer, another's domain uses it."""
    FORGET = 'forget'
    """A free device no longer on the host."""
    MARK_ORPHAN = 'mark-orphan'
    FREE_ORPHAN = 'free-orphan'
    CLEAR_ORPHAN = 'clear-orphan'
    RECREATE = 'recreate'
    """Missing from the host (a reboot): made again, same id."""
    ADOPT = 'adopt'
    """Used by a guest's domain, made by someone else: now its device."""
    ADOPT_FREE = 'adopt-free'
    """Nova's in-tree support left it unused: now a free device."""
    FOREIGN = 'foreign'
    """Not this project's, used by no guest: left alone."""


#: Kinds that change nothing.
LEFT_ALONE = frozenset({Kind.FOREIGN, Kind.CONFLICT})


@dataclasses.dataclass(frozen=True)
class Action:
    """One thing reconcile does (or would do, in a dry run)."""

    kind: Kind
    device_id: str
    detail: str


@dataclasses.dataclass(frozen=True)
class OnEntry:
    """A step on a device the ledger records."""

    action: Action
    entry: ledger_mod.Entry
    consumer_gone: bool = False
    """For FINISH_CREATE: its consumer is gone (freed after the grace)."""


@dataclasses.dataclass(frozen=True)
class OnDevice:
    """A step on a device only the host has."""

    action: Action
    device: model.MediatedDevice
    consumer: str | None = None
    gpu: str = ''


Step = OnEntry | OnDevice


def plan(al: Devices, live: set[str] | None,
         guest_devices: dict[str, list[str]], now: float,
         adopt_unused: bool = False,
         scan_max_age: float = 0.0) -> list[Step]:
    """The steps that make host and ledger agree (see ``reconcile``)."""
    snapshot = al.scan(max_age=scan_max_age)
    on_host = {d.device_id: d for d in snapshot.mediated_devices}
    owner_of = {dev: consumer for consumer, devs in guest_devices.items()
                for dev in devs}
    entries = al.ledger.all()
    steps: list[Step] = []

    def on_entry(kind, entry, detail, gone=False):
        steps.append(OnEntry(Action(kind, entry.device_id, detail), entry,
                             gone))

    for entry in entries:
        exists = entry.device_id in on_host
        if entry.state == ledger_mod.CREATING:
            if exists:
                gone = live is not None and entry.consumer not in live
                on_entry(Kind.FINISH_CREATE, entry, 'created for %s before '
                         'a crash; now recorded as its device%s' % (
                             entry.consumer, ' (its consumer is gone: freed '
                             'after the grace period)' if gone else ''),
                         gone)
            else:
                on_entry(Kind.DROP_INTENT, entry, 'creation for %s never '
                         'happened' % entry.consumer)
            continue
        if entry.state == ledger_mod.REMOVING:
            if exists:
                on_entry(Kind.FINISH_REMOVE, entry, 'removal interrupted')
            else:
                on_entry(Kind.DROP_INTENT, entry, 'already removed')
            continue
        claimed_by = owner_of.get(entry.device_id)
        if claimed_by and entry.consumer not in (None, claimed_by):
            on_entry(Kind.CONFLICT, entry, 'the ledger gives it to %s but '
                     'the domain of %s uses it: left as is, check both '
                     'instances' % (entry.consumer, claimed_by))
            continue
        if entry.state == ledger_mod.FREE:
            if not exists:
                on_entry(Kind.FORGET, entry,
                         'free device no longer on the host')
            continue
        # ACTIVE
        if live is not None and entry.consumer not in live:
            if entry.orphaned_at is None:
                on_entry(Kind.MARK_ORPHAN, entry, '%s is gone; freed after '
                         '%.0f s' % (entry.consumer, al.orphan_grace))
            elif now - entry.orphaned_at >= al.orphan_grace:
                on_entry(Kind.FREE_ORPHAN, entry, '%s has been gone for '
                         '%.0f s' % (entry.consumer, now - entry.orphaned_at))
            continue
        if live is not None and entry.orphaned_at is not None:
            on_entry(Kind.CLEAR_ORPHAN, entry, '%s is back' % entry.consumer)
        if not exists:
            on_entry(Kind.RECREATE, entry, 'missing from the host '
                     '(rebooted?): made again with the same id on %s'
                     % entry.parent)
    known = {e.device_id for e in entries}
    managed = {(parent, t.type_id) for t in al.targets.values()
               for parent in t.parents}
    served = {parent for parent, _ in managed}
    for device_id, device in sorted(on_host.items()):
        if device_id in known:
            continue
        if device.parent not in served:
            # On a GPU this host serves no vGPU from: another owner's
            # (Cyborg's, whose mdevs Nova 34 makes for accelerator
            # requests; a GPU passed through): neither this project's nor
            # foreign to it.
            continue
        consumer = owner_of.get(device_id)
        gpu = snapshot.gpu_of_parent(device.parent)
        gpu_name = gpu.name if gpu else device.parent
        if consumer is not None:
            steps.append(OnDevice(Action(
                Kind.ADOPT, device_id, 'used by the domain of %s: now '
                'recorded as its device' % consumer), device, consumer,
                gpu_name))
        elif adopt_unused and (device.parent, device.type_id) in managed:
            steps.append(OnDevice(Action(
                Kind.ADOPT_FREE, device_id, 'an unused %s on a GPU Nova '
                'uses for that type (as Nova\'s in-tree support leaves '
                'them): now a free device, reused first' % device.type_id),
                device, None, gpu_name))
        else:
            steps.append(OnDevice(Action(
                Kind.FOREIGN, device_id, 'not made by vgpu-nova-ext and '
                'used by no guest: left alone (remove it by hand if it is '
                'stale)'), device))
    return steps


def apply(al: Devices, step: Step, now: float) -> None:
    """Carry one step out (the allocator's lock held)."""
    _APPLY[step.action.kind](al, step, now)


def remove_foreign(al: Devices,
                   device_ids: list[str]) -> tuple[str, ...]:
    """Remove devices this project did not make, as the operator asks.

    :raises ClaimError: for a device the ledger gives to a consumer,
        or one that is not on the host (a typo, a path): nothing is
        removed then.
    """
    # The allocator's lock held.
    on_host = {d.device_id for d in al.scan().mediated_devices}
    for device_id in device_ids:
        if device_id not in on_host:
            raise exception.ClaimError(
                'device %r is not on this host; give the id (mdev '
                'UUID or VF address) as "vgpu-nova-ext devices" '
                'lists it; nothing was removed' % (device_id,))
        entry = al.ledger.get(device_id)
        if entry is not None:
            raise exception.ClaimError(
                'device %s is not foreign: the ledger gives it to %s '
                '(%s); nothing was removed' % (
                    device_id, entry.consumer or 'no one',
                    entry.state))
    removed = []
    for device_id in device_ids:
        if al.backend.device_exists(device_id):
            al._remove_from_host(device_id)
            removed.append(device_id)
    return tuple(removed)


def _nothing(al, step, now) -> None:
    pass


def _finish_create(al, step: OnEntry, now) -> None:
    with al.ledger.transaction():
        al.ledger.update(step.entry.device_id, state=ledger_mod.ACTIVE,
                         orphaned_at=now if step.consumer_gone else None)
    al.mdevctl.write(step.entry)


def _delete(al, step: OnEntry, now) -> None:
    with al.ledger.transaction():
        al.ledger.delete(step.entry.device_id)


def _finish_remove(al, step: OnEntry, now) -> None:
    al._remove(step.entry)


def _mark_orphan(al, step: OnEntry, now) -> None:
    with al.ledger.transaction():
        al.ledger.update(step.entry.device_id, orphaned_at=now)


def _clear_orphan(al, step: OnEntry, now) -> None:
    with al.ledger.transaction():
        al.ledger.update(step.entry.device_id, orphaned_at=None)


def _free_orphan(al, step: OnEntry, now) -> None:
    al._release([step.entry])
    al.ledger.count_event('orphans_freed')


def _recreate(al, step: OnEntry, now) -> None:
    entry = step.entry
    try:
        al._create_on_host(entry.parent, entry.type_id, entry.device_id)
    except exception.DeviceError as exc:
        LOG.error('cannot re-create %s for %s: %s', entry.device_id,
                  entry.consumer, exc)
        return
    checkpoints.reached('recreate.device_created')
    al.mdevctl.write(entry)
    al.ledger.count_event('devices_recreated')


def _adopt(al, step: OnDevice, now) -> None:
    device = step.device
    with al.ledger.transaction():
        al.ledger.add(ledger_mod.Entry(
            device_id=device.device_id, kind=device.kind, gpu=step.gpu,
            parent=device.parent, type_id=device.type_id,
            consumer=step.consumer,
            state=(ledger_mod.ACTIVE if step.consumer is not None
                   else ledger_mod.FREE),
            origin=ledger_mod.ADOPTED, changed_at=now))


_APPLY = {
    Kind.FINISH_CREATE: _finish_create,
    Kind.DROP_INTENT: _delete,
    Kind.FINISH_REMOVE: _finish_remove,
    Kind.CONFLICT: _nothing,
    Kind.FORGET: _delete,
    Kind.MARK_ORPHAN: _mark_orphan,
    Kind.FREE_ORPHAN: _free_orphan,
    Kind.CLEAR_ORPHAN: _clear_orphan,
    Kind.RECREATE: _recreate,
    Kind.ADOPT: _adopt,
    Kind.ADOPT_FREE: _adopt,
    Kind.FOREIGN: _nothing,
}
