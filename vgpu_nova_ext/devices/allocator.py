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
"""Claim, release and reconcile the vGPU devices of instances.

Nova hands a driver the instance's allocations as ``{provider_uuid:
{"resources": {resource_class: n}}}``. :meth:`Allocator.claim` maps each
provider to its physical GPU, reuses free devices of the right type there
before creating new ones, and returns the devices for the guest. Every
host change is written to the ledger first (intent) and marked done after;
:meth:`Allocator.reconcile` finishes or undoes whatever a crash left half
done, re-creates the devices of a rebooted host with the same UUIDs,
adopts devices that guests already use, and frees the devices of
consumers that are gone (after a grace period).

A device's consumer is the Placement consumer whose allocation it stands
for, as Nova moves allocations: the instance holds the devices of the host
it runs on; while a cold migration or resize waits for its confirmation,
the migration holds the source's (:meth:`Allocator.hand_over`), freed at
the confirmation or given back at a revert (:meth:`Allocator.take_back`).
Looking an instance's devices up is then one query on every host, whatever
moves it went through, and the ledger can be checked against Placement
consumer by consumer.

One host, many threads and processes: every operation holds an external
lock (oslo.concurrency, a file in the state directory) and writes the
ledger in ``BEGIN IMMEDIATE`` transactions.
"""

from collections.abc import Iterable
import dataclasses
import threading
import time

from oslo_concurrency import lockutils
from oslo_log import log as logging

from vgpu_nova_ext.devices import ledger as ledger_mod
from vgpu_nova_ext.devices import mig_layout
from vgpu_nova_ext import exception
from vgpu_nova_ext.host import address
from vgpu_nova_ext.host import base as host_base
from vgpu_nova_ext.host import model
from vgpu_nova_ext import inventory
from vgpu_nova_ext import mapping
from vgpu_nova_ext.vendors import base as vendors_base

LOG = logging.getLogger(__name__)
LOCK_NAME = 'vgpu-nova-ext-devices'
REMOVE = 'remove'
KEEP = 'keep'


def checkpoint(name: str) -> None:
    """A point between an intent and its completion.

    Does nothing; the crash tests replace it to kill the process there.
    """


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


@dataclasses.dataclass(frozen=True)
class Action:
    """One thing reconcile does (or would do, in a dry run)."""

    kind: str
    device_id: str
    detail: str


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


class Allocator:
    """The devices of one host's instances."""

    def __init__(self, backend: host_base.HostBackend,
                 ledger: ledger_mod.Ledger, targets: dict[str, Target],
                 lock_path: str, free_policy: str = REMOVE,
                 orphan_grace: float = 600.0,
                 mdevctl_path: str | None = None) -> None:
        self.backend = backend
        self.ledger = ledger
        self.targets = targets
        self.lock_path = lock_path
        self.free_policy = free_policy
        self.orphan_grace = orphan_grace
        self.mdevctl_path = mdevctl_path
        self.vendors = vendors_base.Vendors()
        # The last scan of the host, and how many device changes this
        # allocator had made when it began: see scan().
        self._host_changes = 0
        self._last_scan: tuple[model.HostSnapshot, int, float] | None = None
        self._scan_guard = threading.Lock()
        # {(GPU, type id): (name, description)}: see _named().
        self._known_names: dict[tuple[str, str],
                                tuple[str, str | None]] | None = None

    def scan(self, max_age: float = 0.0) -> model.HostSnapshot:
        """The host, from the last scan if it is recent enough.

        nova-compute's periodic task reconciles the devices and then
        updates the provider tree, each needing a scan; the second reuses
        the first. A scan is reused only if it is at most ``max_age``
        seconds old and no device was created or removed through this
        allocator since it began (a change made by another process shows
        at the next scan).
        """
        with self._scan_guard:
            last = self._last_scan
        if last is not None and max_age > 0:
            snapshot, changes, taken = last
            if (changes == self._host_changes and
                    time.monotonic() - taken <= max_age):
                return snapshot
        # Counted before the scan begins: a change that ends during the
        # scan makes this snapshot stale.
        changes = self._host_changes
        taken = time.monotonic()
        snapshot = self._named(self.backend.scan())
        with self._scan_guard:
            self._last_scan = (snapshot, changes, taken)
        return snapshot

    def _named(self, snapshot: model.HostSnapshot) -> model.HostSnapshot:
        """Remember the type names the host shows; fill those it does not.

        A full vendor-VFIO GPU no longer names its types; the name read
        before (in the ledger, so it survives a restart) keeps the name
        trait and what the vendor derives from the name.
        """
        # The ledger is used outside _scan_guard: a caller may hold the
        # ledger's lock (in a transaction) and then scan.
        known = self._known_names
        if known is None:
            known = self.ledger.type_names()
        seen = snapshot.type_names()
        changed = {k: v for k, v in seen.items() if known.get(k) != v}
        if changed:
            self.ledger.remember_type_names(changed)
        with self._scan_guard:
            known = self._known_names = (self._known_names or known) | changed
        return snapshot.with_type_names(known)

    def _create_on_host(self, parent: str, type_id: str,
                        device_id: str) -> None:
        try:
            self.backend.create_device(parent, type_id, device_id)
        finally:
            with self._scan_guard:
                self._host_changes += 1

    def _remove_from_host(self, device_id: str) -> None:
        try:
            self.backend.remove_device(device_id)
        finally:
            with self._scan_guard:
                self._host_changes += 1

    def _lock(self):
        return lockutils.lock(LOCK_NAME, external=True,
                              lock_path=self.lock_path)

    # -- MIG layouts -------------------------------------------------------
    def carve_mig_layouts(self, config, dry_run: bool = False):
        """Carve the GPU instances nova.conf declares (at start-up).

        Under the host lock, so that no claim runs while a GPU is carved.
        :returns: the :class:`~vgpu_nova_ext.devices.mig_layout.Plan`.
        """
        with self._lock():
            snapshot = self._named(self.backend.scan())
            result = mig_layout.plan(
                config, snapshot, mig_layout.Remembered.of(self.ledger),
                self.vendors)
            if dry_run:
                return result
            for gpu_plan in result.gpus:
                if gpu_plan.action != mig_layout.CARVE:
                    continue
                try:
                    mig_layout.carve(self.backend, gpu_plan, self.ledger)
                finally:
                    with self._scan_guard:
                        self._host_changes += 1
            return result

    # -- claim -------------------------------------------------------------
    def check_combination(self, consumer: str, allocations: dict) -> None:
        """The vendor's rules for the vGPUs of one guest, before a claim.

        The driver asks this before every claim it makes for a guest; the
        claim itself is the mechanics (and its tests' guests on M60 hosts
        hold two vGPUs that NVIDIA's rules would refuse).

        :raises CombinationRefused: naming the rule; nothing was changed.
        """
        wanted = self._wanted(consumer, allocations, self.targets)
        vgpus = [t.type_info for t, n in wanted for _ in range(n)
                 if t.type_info is not None]
        problem = self.vendors.combination_problem(vgpus)
        if problem:
            raise exception.CombinationRefused(
                'claim for %s: %s; nothing was created' % (consumer,
                                                           problem))

    def _wanted(self, consumer: str, allocations: dict,
                targets: dict[str, Target]) -> list[tuple[Target, int]]:
        wanted = []
        # Other resources (VCPU on the root, PCI devices ...) are not ours.
        classes = {t.resource_class for t in targets.values()} | {
            'VGPU'}
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

    def _creatable(self, target: Target, need: int) -> list[str]:
        """Parents to create ``need`` devices on, or fewer if no room."""
        out: list[str] = []
        if need <= 0:
            return out
        for parent in target.parents:
            try:
                available = self.backend.available(parent, target.type_id)
            except exception.DeviceError:
                continue
            take = min(available, 1 if target.sriov else need - len(out))
            out.extend([parent] * take)
            if len(out) >= need:
                break
        if target.sriov and target.max_per_gpu is not None:
            held = self.ledger.count(target.gpu, target.type_id)
            out = out[:max(0, target.max_per_gpu - held)]
        return out[:need]

    def claim(self, consumer: str, allocations: dict) -> Claim:
        """Devices for ``consumer``'s allocations; idempotent.

        :param consumer: the Placement consumer of the allocations (the
            instance, whose devices these are).
        :raises ClaimError: the claim cannot be met; nothing was changed.
        """
        try:
            return self._claim(consumer, allocations)
        except exception.ClaimError:
            self.ledger.count_event('claims_failed')
            raise

    def _claim(self, consumer: str, allocations: dict) -> Claim:
        # The periodic refresh replaces the whole dict: one claim works
        # from one plan, whichever it finds.
        targets = self.targets
        with self._lock():
            wanted = self._wanted(consumer, allocations, targets)
            held = self.ledger.of_consumer(consumer)
            if held:
                wanted = self._still_wanted(consumer, held, wanted)
                if not wanted:
                    return self._as_claim(consumer, held, targets)
            plan = []
            for target, n in wanted:
                reuse = self.ledger.free(target.gpu, target.type_id, n)
                create = self._creatable(target, n - len(reuse))
                if len(reuse) + len(create) < n:
                    raise exception.ClaimError(
                        'claim for %s: no room for %d %s on %s (%s): %d free '
                        'device(s) to reuse and room for %d more; nothing '
                        'was changed' % (consumer, n, target.type_id,
                                         target.provider_name, target.gpu,
                                         len(reuse), len(create)))
                plan.append((target, reuse, create))
            now = time.time()
            # Host reads before the transaction: it holds the ledger, which
            # other threads wait for, and should not wait on the host.
            new = [ledger_mod.Entry(
                device_id=self.backend.new_device_id(parent, target.type_id),
                kind=self.backend.device_kind_of(parent), gpu=target.gpu,
                parent=parent, type_id=target.type_id, consumer=consumer,
                state=ledger_mod.CREATING, origin=ledger_mod.CREATED,
                changed_at=now)
                for target, _, create in plan for parent in create]
            with self.ledger.transaction():
                for _, reuse, _ in plan:
                    for entry in reuse:
                        self.ledger.update(entry.device_id, consumer=consumer,
                                           state=ledger_mod.ACTIVE,
                                           orphaned_at=None)
                for entry in new:
                    self.ledger.add(entry)
            checkpoint('claim.intent_written')
            try:
                for entry in new:
                    self._create_on_host(entry.parent, entry.type_id,
                                         entry.device_id)
                    checkpoint('claim.device_created')
                    with self.ledger.transaction():
                        self.ledger.update(entry.device_id,
                                           state=ledger_mod.ACTIVE)
                    checkpoint('claim.device_recorded')
                    self._write_mdevctl(entry)
            except exception.DeviceError as exc:
                self._undo(consumer, {e.device_id for e in new})
                raise exception.ClaimError(
                    'claim for %s failed and was undone: %s' % (
                        consumer, exc))
            return self._as_claim(consumer, self.ledger.of_consumer(consumer),
                                  targets)

    def _still_wanted(self, consumer, held, wanted):
        """What a repeated claim still lacks.

        A crash may have cut the first one short. It is an error if the
        consumer holds something else than it asks for now.
        """
        have: dict[str, int] = {}
        for entry in held:
            have[entry.gpu] = have.get(entry.gpu, 0) + 1
        want = {t.gpu: n for t, n in wanted}
        if any(e.state != ledger_mod.ACTIVE for e in held) or any(
                n > want.get(gpu, 0) for gpu, n in have.items()):
            raise exception.ClaimError(
                'claim for %s: it already holds %s, not the %s asked; '
                'release it first (or run reconcile if a crash left it '
                'half done)' % (consumer, _counts(have), _counts(want)))
        return [(t, n - have.get(t.gpu, 0)) for t, n in wanted
                if n > have.get(t.gpu, 0)]

    def _as_claim(self, consumer, entries,
                  targets: dict[str, Target]) -> Claim:
        by_gpu = {t.gpu: t.provider_uuid for t in targets.values()}
        return Claim(consumer=consumer, devices=tuple(ClaimedDevice(
            device_id=e.device_id, kind=e.kind, gpu=e.gpu, parent=e.parent,
            type_id=e.type_id, provider_uuid=by_gpu.get(e.gpu))
            for e in entries))

    def _undo(self, consumer: str, created: set[str]) -> None:
        """Put the host and the ledger back as before a failed claim."""
        for entry in self.ledger.of_consumer(consumer):
            if entry.device_id not in created:
                with self.ledger.transaction():
                    self.ledger.update(entry.device_id, consumer=None,
                                       state=ledger_mod.FREE)
                continue
            self._remove(entry)

    # -- release -----------------------------------------------------------
    def release(self, consumer: str,
                keep: Iterable[str] = ()) -> tuple[str, ...]:
        """Free ``consumer``'s devices: remove them, or keep them free.

        :param keep: devices of the consumer that stay its own.
        """
        keep = frozenset(keep)
        with self._lock():
            freed = self._release([e for e in self.ledger.of_consumer(
                consumer) if e.device_id not in keep])
            if not keep:
                with self.ledger.transaction():
                    self.ledger.unlink(consumer)
            return freed

    def release_instance(self, instance: str) -> tuple[str, ...]:
        """Free the devices of an instance and of its migrations here."""
        freed: tuple[str, ...] = ()
        for consumer in [instance] + self.ledger.linked(instance):
            freed += self.release(consumer)
        return freed

    def hand_over(self, instance: str, migration: str) -> tuple[str, ...]:
        """Give an instance's devices here to its migration.

        As Nova's conductor gives the source's allocations to the migration
        when a cold migration or resize begins: the devices stand for those
        allocations, and the instance claims new ones where it lands (the
        same host included). A confirmation frees the migration's, a revert
        gives them back (:meth:`take_back`).
        """
        with self._lock(), self.ledger.transaction():
            moved = self.ledger.of_consumer(instance)
            for entry in moved:
                self.ledger.update(entry.device_id, consumer=migration)
            if moved:
                self.ledger.link(migration, instance)
            return tuple(e.device_id for e in moved)

    def take_back(self, migration: str, instance: str) -> tuple[str, ...]:
        """Give a migration's devices back to its instance (a revert)."""
        with self._lock(), self.ledger.transaction():
            moved = self.ledger.of_consumer(migration)
            for entry in moved:
                self.ledger.update(entry.device_id, consumer=instance)
            self.ledger.unlink(migration)
            return tuple(e.device_id for e in moved)

    def _release(self, entries) -> tuple[str, ...]:
        freed = []
        for entry in entries:
            if self.free_policy == KEEP and entry.state == ledger_mod.ACTIVE:
                with self.ledger.transaction():
                    self.ledger.update(entry.device_id, consumer=None,
                                       state=ledger_mod.FREE,
                                       orphaned_at=None)
            else:
                self._remove(entry)
            freed.append(entry.device_id)
        return tuple(freed)

    def _remove(self, entry: ledger_mod.Entry) -> None:
        with self.ledger.transaction():
            self.ledger.update(entry.device_id, state=ledger_mod.REMOVING)
        checkpoint('remove.intent_written')
        self._remove_from_host(entry.device_id)
        checkpoint('remove.device_removed')
        self._forget_mdevctl(entry)
        with self.ledger.transaction():
            self.ledger.delete(entry.device_id)
        checkpoint('remove.device_recorded')

    # -- reconcile ---------------------------------------------------------
    def reconcile(self, live_consumers: set[str] | None = None,
                  guest_devices: dict[str, list[str]] | None = None,
                  dry_run: bool = False,
                  now: float | None = None,
                  adopt_unused: bool = False,
                  scan_max_age: float = 0.0) -> tuple[Action, ...]:
        """Make host and ledger agree; return what was (or would be) done.

        :param live_consumers: consumers that exist; devices of others are
            freed after the grace period. None: do not judge.
        :param guest_devices: {consumer: [device ids its domain XML uses]},
            to adopt devices made by someone else for that guest.
        :param adopt_unused: ``guest_devices`` lists every domain of the
            host, so a device of a GPU's configured type that no domain uses
            is one Nova's in-tree support left for reuse (Nova never removes
            its mdevs): it becomes a free device here instead of a foreign
            one, which would hold capacity Placement counts.
        :param scan_max_age: the host may be read from a scan this many
            seconds old (see :meth:`scan`).
        """
        now = time.time() if now is None else now
        if live_consumers is not None:
            # A migration's devices live as long as its instance does.
            live_consumers = set(live_consumers) | {
                c for c, i in self.ledger.links().items()
                if i in live_consumers}
        with self._lock():
            actions = self._plan(live_consumers, guest_devices or {}, now,
                                 adopt_unused, scan_max_age)
            if not dry_run:
                for action in actions:
                    self._apply(action, now)
            return tuple(a for a, _ in actions)

    def _plan(self, live, guest_devices, now, adopt_unused=False,
              scan_max_age=0.0):
        snapshot = self.scan(max_age=scan_max_age)
        on_host = {d.device_id: d for d in snapshot.mediated_devices}
        owner_of = {dev: consumer for consumer, devs in guest_devices.items()
                    for dev in devs}
        entries = self.ledger.all()
        actions = []

        def add(kind, entry_or_id, detail, payload=None):
            device_id = getattr(entry_or_id, 'device_id', entry_or_id)
            actions.append((Action(kind, device_id, detail),
                            payload if payload is not None else entry_or_id))

        for entry in entries:
            exists = entry.device_id in on_host
            if entry.state == ledger_mod.CREATING:
                if exists:
                    gone = live is not None and entry.consumer not in live
                    add('finish-create', entry, 'created for %s before a '
                        'crash; now recorded as its device%s' % (
                            entry.consumer, ' (its consumer is gone: freed '
                            'after the grace period)' if gone else ''),
                        (entry, gone))
                else:
                    add('drop-intent', entry, 'creation for %s never '
                        'happened' % entry.consumer)
                continue
            if entry.state == ledger_mod.REMOVING:
                add('finish-remove' if exists else 'drop-intent', entry,
                    'removal interrupted' if exists else
                    'already removed')
                continue
            claimed_by = owner_of.get(entry.device_id)
            if claimed_by and entry.consumer not in (None, claimed_by):
                add('conflict', entry, 'the ledger gives it to %s but the '
                    'domain of %s uses it: left as is, check both '
                    'instances' % (entry.consumer, claimed_by))
                continue
            if entry.state == ledger_mod.FREE:
                if not exists:
                    add('forget', entry, 'free device no longer on the host')
                continue
            # ACTIVE
            if live is not None and entry.consumer not in live:
                if entry.orphaned_at is None:
                    add('mark-orphan', entry, '%s is gone; freed after %.0f s'
                        % (entry.consumer, self.orphan_grace))
                elif now - entry.orphaned_at >= self.orphan_grace:
                    add('free-orphan', entry, '%s has been gone for %.0f s'
                        % (entry.consumer, now - entry.orphaned_at))
                continue
            if live is not None and entry.orphaned_at is not None:
                add('clear-orphan', entry, '%s is back' % entry.consumer)
            if not exists:
                add('recreate', entry, 'missing from the host (rebooted?): '
                    'made again with the same id on %s' % entry.parent)
        known = {e.device_id for e in entries}
        managed = {(parent, t.type_id) for t in self.targets.values()
                   for parent in t.parents}
        served = {parent for parent, _ in managed}
        for device_id, device in sorted(on_host.items()):
            if device_id in known:
                continue
            if device.parent not in served:
                # On a GPU this host serves no vGPU from: another owner's
                # (Cyborg's, whose mdevs Nova 34 makes for accelerator
                # requests; a GPU passed through): neither this project's
                # nor foreign to it.
                continue
            consumer = owner_of.get(device_id)
            gpu = snapshot.gpu_of_parent(device.parent)
            gpu_name = gpu.name if gpu else device.parent
            if consumer is not None:
                add('adopt', device_id, 'used by the domain of %s: now '
                    'recorded as its device' % consumer,
                    (device, consumer, gpu_name))
            elif adopt_unused and (device.parent,
                                   device.type_id) in managed:
                add('adopt-free', device_id, 'an unused %s on a GPU Nova '
                    'uses for that type (as Nova\'s in-tree support leaves '
                    'them): now a free device, reused first' %
                    device.type_id, (device, None, gpu_name))
            else:
                add('foreign', device_id, 'not made by vgpu-nova-ext and '
                    'used by no guest: left alone (remove it by hand if it '
                    'is stale)', device)
        return actions

    def _apply(self, item, now) -> None:
        action, payload = item
        kind = action.kind
        if kind in ('foreign', 'conflict'):
            return
        if kind == 'finish-create':
            entry, gone = payload
            with self.ledger.transaction():
                self.ledger.update(action.device_id, state=ledger_mod.ACTIVE,
                                   orphaned_at=now if gone else None)
            self._write_mdevctl(entry)
        elif kind == 'drop-intent' or kind == 'forget':
            with self.ledger.transaction():
                self.ledger.delete(action.device_id)
        elif kind == 'finish-remove':
            self._remove(payload)
        elif kind == 'mark-orphan':
            with self.ledger.transaction():
                self.ledger.update(action.device_id, orphaned_at=now)
        elif kind == 'clear-orphan':
            with self.ledger.transaction():
                self.ledger.update(action.device_id, orphaned_at=None)
        elif kind == 'free-orphan':
            self._release([payload])
            self.ledger.count_event('orphans_freed')
        elif kind == 'recreate':
            try:
                self._create_on_host(payload.parent, payload.type_id,
                                     payload.device_id)
            except exception.DeviceError as exc:
                LOG.error('cannot re-create %s for %s: %s', payload.device_id,
                          payload.consumer, exc)
                return
            self._write_mdevctl(payload)
            self.ledger.count_event('devices_recreated')
        elif kind in ('adopt', 'adopt-free'):
            device, consumer, gpu = payload
            with self.ledger.transaction():
                self.ledger.add(ledger_mod.Entry(
                    device_id=device.device_id, kind=device.kind, gpu=gpu,
                    parent=device.parent, type_id=device.type_id,
                    consumer=consumer,
                    state=(ledger_mod.ACTIVE if consumer is not None
                           else ledger_mod.FREE),
                    origin=ledger_mod.ADOPTED, changed_at=now))

    def remove_foreign(self, device_ids: list[str]) -> tuple[str, ...]:
        """Remove devices this project did not make, as the operator asks.

        :raises ClaimError: for a device the ledger gives to a consumer,
            or one that is not on the host (a typo, a path): nothing is
            removed then.
        """
        with self._lock():
            on_host = {d.device_id for d in self.scan().mediated_devices}
            for device_id in device_ids:
                if device_id not in on_host:
                    raise exception.ClaimError(
                        'device %r is not on this host; give the id (mdev '
                        'UUID or VF address) as "vgpu-nova-ext devices" '
                        'lists it; nothing was removed' % (device_id,))
                entry = self.ledger.get(device_id)
                if entry is not None:
                    raise exception.ClaimError(
                        'device %s is not foreign: the ledger gives it to %s '
                        '(%s); nothing was removed' % (
                            device_id, entry.consumer or 'no one',
                            entry.state))
            removed = []
            for device_id in device_ids:
                if self.backend.device_exists(device_id):
                    self._remove_from_host(device_id)
                    removed.append(device_id)
            return tuple(removed)

    # -- mdevctl -------------------------------------------------------------
    def _mdevctl_parent(self, entry) -> str | None:
        """The parent's directory name in mdevctl.d, if one is kept."""
        if not self.mdevctl_path or entry.kind != model.MDEV:
            return None
        return (address.normalize_pci_address(entry.parent)
                or entry.parent.rsplit('_', 1)[-1])

    def _write_mdevctl(self, entry) -> None:
        """``/etc/mdevctl.d/<parent>/<uuid>``: the kernel side persisted."""
        parent = self._mdevctl_parent(entry)
        if parent is not None:
            self.backend.writer.write_mdevctl(
                self.mdevctl_path, parent, entry.device_id, entry.type_id)

    def _forget_mdevctl(self, entry) -> None:
        parent = self._mdevctl_parent(entry)
        if parent is not None:
            self.backend.writer.remove_mdevctl(self.mdevctl_path, parent,
                                               entry.device_id)


def _counts(per_gpu: dict[str, int]) -> str:
    return ', '.join('%d on %s' % (n, gpu) for gpu, n in
                     sorted(per_gpu.items())) or 'nothing'
