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
import time

from oslo_concurrency import lockutils
from oslo_log import log as logging

from vgpu_nova_ext.devices import bring_up as bring_up_mod
from vgpu_nova_ext.devices import checkpoints
from vgpu_nova_ext.devices import device_params
from vgpu_nova_ext.devices import host_view
from vgpu_nova_ext.devices import ledger as ledger_mod
from vgpu_nova_ext.devices import mdevctl
from vgpu_nova_ext.devices import mig_layout
from vgpu_nova_ext.devices import reconcile as reconcile_mod
from vgpu_nova_ext.devices import scheduling
from vgpu_nova_ext.devices import targets as targets_mod
from vgpu_nova_ext import exception
from vgpu_nova_ext.host import base as host_base
from vgpu_nova_ext.host import model
from vgpu_nova_ext.vendors import base as vendors_base

LOG = logging.getLogger(__name__)
LOCK_NAME = 'vgpu-nova-ext-devices'
REMOVE = 'remove'
KEEP = 'keep'


# The names its users know these by.
Target = targets_mod.Target
ClaimedDevice = targets_mod.ClaimedDevice
Claim = targets_mod.Claim
targets = targets_mod.targets


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
        self.mdevctl = mdevctl.Definitions(backend, mdevctl_path)
        self.vendors = vendors_base.loaded()
        self.view = host_view.HostView(backend, ledger)

    def scan(self, max_age: float = 0.0,
             unchanged_max_age: float = 0.0) -> model.HostSnapshot:
        """The host, from the last scan if it is recent enough.

        See :meth:`~vgpu_nova_ext.devices.host_view.HostView.scan`.
        """
        return self.view.scan(max_age, unchanged_max_age)

    def _create_on_host(self, parent: str, type_id: str,
                        device_id: str) -> None:
        with self.view.changing():
            self.backend.create_device(parent, type_id, device_id)

    def _remove_from_host(self, device_id: str) -> None:
        with self.view.changing():
            self.backend.remove_device(device_id)

    def _lock(self):
        return lockutils.lock(LOCK_NAME, external=True,
                              lock_path=self.lock_path)

    # -- after a host reboot ------------------------------------------------
    def bring_up(self, config, dry_run: bool = False, **retry):
        """Enable the VFs of the GPUs this host serves that have none.

        The first step after a reboot (:mod:`.bring_up`); under the host
        lock. ``retry``: ``backoff`` and ``sleep`` for
        :func:`.bring_up.enable`.

        :returns: (the GPUs to enable, a finding for each left without).
        """
        with self._lock():
            snapshot = self.view.named(self.backend.scan())
            mig_gpus = {g.gpu for g in mig_layout.plan(
                config, snapshot, mig_layout.Remembered.of(self.ledger),
                self.vendors).gpus}
            steps = bring_up_mod.plan(config, snapshot, self.ledger,
                                      mig_gpus)
            if dry_run or not steps:
                return steps, []
            with self.view.changing():
                return steps, bring_up_mod.run(
                    self.backend, steps,
                    getattr(self.backend, 'timeout', 10.0), **retry)

    # -- MIG layouts -------------------------------------------------------
    def carve_mig_layouts(self, config, dry_run: bool = False):
        """Carve the GPU instances nova.conf declares (at start-up).

        Under the host lock, so that no claim runs while a GPU is carved.
        :returns: the :class:`~vgpu_nova_ext.devices.mig_layout.Plan`.
        """
        with self._lock():
            snapshot = self.view.named(self.backend.scan())
            remembered = mig_layout.Remembered.of(self.ledger)
            result = mig_layout.plan(config, snapshot, remembered,
                                     self.vendors)
            if dry_run:
                return result
            for gpu_plan in result.gpus:
                if gpu_plan.action == mig_layout.KEEP and \
                        remembered.layouts.get(gpu_plan.gpu) != \
                        gpu_plan.words:
                    # Carved before this service knew the GPU (by hand,
                    # or as a host came): remembered as if carved here,
                    # so that a reboot carves it again under its guests.
                    self.ledger.end_mig_layout(gpu_plan.gpu, gpu_plan.words)
                if gpu_plan.action != mig_layout.CARVE:
                    continue
                with self.view.changing():
                    mig_layout.carve(self.backend, gpu_plan, self.ledger)
            return result

    def set_vgpu_schedulers(self, planned):
        """Each idle GPU's declared vGPU scheduler, under the host lock."""
        if not any(p.action == scheduling.Action.APPLY for p in planned):
            return [], []
        with self._lock(), self.view.changing():
            return scheduling.apply(self.backend, planned)

    # -- claim -------------------------------------------------------------
    def check_combination(self, consumer: str, allocations: dict) -> None:
        """The vendor's rules for the vGPUs of one guest, before a claim.

        The driver asks this before every claim it makes for a guest; the
        claim itself is the mechanics (and its tests' guests on M60 hosts
        hold two vGPUs that NVIDIA's rules would refuse).

        :raises CombinationRefused: naming the rule; nothing was changed.
        """
        wanted = targets_mod.wanted(consumer, allocations, self.targets)
        vgpus = [t.type_info for t, n in wanted for _ in range(n)
                 if t.type_info is not None]
        problem = self.vendors.combination_problem(vgpus)
        if problem:
            raise exception.CombinationRefused(
                'claim for %s: %s; nothing was created' % (consumer,
                                                           problem))

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
            wanted = targets_mod.wanted(consumer, allocations, targets)
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
            checkpoints.reached('claim.intent_written')
            try:
                for entry in new:
                    self._create_on_host(entry.parent, entry.type_id,
                                         entry.device_id)
                    checkpoints.reached('claim.device_created')
                    with self.ledger.transaction():
                        self.ledger.update(entry.device_id,
                                           state=ledger_mod.ACTIVE)
                    checkpoints.reached('claim.device_recorded')
                    self.mdevctl.write(entry)
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
                device_params.clear(self.backend, self.mdevctl, entry)
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
        checkpoints.reached('remove.intent_written')
        self._remove_from_host(entry.device_id)
        checkpoints.reached('remove.device_removed')
        self.mdevctl.forget(entry)
        with self.ledger.transaction():
            self.ledger.delete(entry.device_id)
        checkpoints.reached('remove.device_recorded')

    # -- reconcile ---------------------------------------------------------
    def reconcile(self, live_consumers: set[str] | None = None,
                  guest_devices: dict[str, list[str]] | None = None,
                  dry_run: bool = False,
                  now: float | None = None,
                  adopt_unused: bool = False,
                  scan_max_age: float = 0.0
                  ) -> tuple[reconcile_mod.Action, ...]:
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
            steps = reconcile_mod.plan(self, live_consumers,
                                       guest_devices or {}, now,
                                       adopt_unused, scan_max_age)
            if not dry_run:
                for step in steps:
                    reconcile_mod.apply(self, step, now)
            return tuple(step.action for step in steps)

    def remove_foreign(self, device_ids: list[str]) -> tuple[str, ...]:
        """Remove devices this project did not make, as the operator asks.

        See :func:`~vgpu_nova_ext.devices.reconcile.remove_foreign`.
        """
        with self._lock():
            return reconcile_mod.remove_foreign(self, device_ids)


def _counts(per_gpu: dict[str, int]) -> str:
    return ', '.join('%d on %s' % (n, gpu) for gpu, n in
                     sorted(per_gpu.items())) or 'nothing'
