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
"""Which vGPU type each physical GPU serves: configuration x host snapshot.

Nova's semantics, with its silent failures turned into problems that name
the option, the value and the fix:

- a type with ``device_addresses`` serves the GPUs listed; the first type
  without them is the default for every GPU not listed elsewhere (Nova
  ignores any further type without addresses: so do we, with a warning);
- a GPU's capacity is the ``available_instances`` of its type plus the
  devices of that type that exist on it;
- an SR-IOV GPU's virtual functions are one unit: each free VF shows 1
  until the GPU is full, so the capacity is the VFs that can host the type
  plus the existing devices, capped by the type's per-GPU maximum;
- ``max_instances`` caps a type across the whole host, as in Nova; it is
  spread over the type's GPUs in address order instead of dropping whole
  GPUs as Nova does.

Pure: no I/O. All problems are collected before returning.
"""

import dataclasses

import os_traits

from vgpu_nova_ext import assignment as assignment_mod
from vgpu_nova_ext.conf import devices as devices_conf
from vgpu_nova_ext import findings
from vgpu_nova_ext.host import address as addr
from vgpu_nova_ext.host import model
from vgpu_nova_ext.vendors import base as vendors_base


GPUAssignment = assignment_mod.GPUAssignment
Assignment = assignment_mod.Assignment
most_per_gpu = assignment_mod.most_per_gpu


@dataclasses.dataclass
class _Claim:
    type_config: devices_conf.TypeConfig
    parents: set[str]
    source: str


def _list(items, limit: int = 8) -> str:
    items = list(items)
    if not items:
        return 'none'
    if len(items) > limit:
        return '%s and %d more' % (', '.join(items[:limit]),
                                   len(items) - limit)
    return ', '.join(items)


class _Mapper:

    def __init__(self, config: devices_conf.DeviceConfig,
                 snapshot: model.HostSnapshot,
                 vendors: vendors_base.Vendors) -> None:
        self.config = config
        self.snapshot = snapshot
        self.vendors = vendors
        self.problems: list[findings.Finding] = []
        self.notes: list[str] = []
        self.claims: dict[str, _Claim] = {}
        self._rules_told: set[tuple[str, int]] = set()
        self._mixed_size_unknown_told = False
        self.by_address: dict[str, tuple[model.PhysicalGPU,
                                         model.ParentDevice | None]] = {}
        for gpu in snapshot.gpus:
            self.by_address[gpu.address] = (gpu, None)
            if gpu.sriov:
                for parent in gpu.parents:
                    self.by_address[parent.address] = (gpu, parent)

    def problem(self, code, severity, where, value, why, fix) -> None:
        self.problems.append(findings.Finding(code, severity, where,
                                              str(value), why, fix))

    # -- the steps -------------------------------------------------------
    def run(self) -> Assignment:
        self.check_enabled()
        offered = self.snapshot.offered_type_ids
        for tconf in self.config.types:
            if tconf.type_id not in offered:
                # One nova.conf for a fleet names the types of every
                # host's GPUs: as with Nova, this host serves what it has.
                self.problem(
                    findings.TYPE_NOT_OFFERED, findings.WARNING,
                    '[devices] %s' % self.config.option, tconf.type_id,
                    'no GPU on this host offers type %s, so this host '
                    'serves none of it (the host offers: %s)'
                    % (tconf.type_id, _list(offered)),
                    'nothing to do if another host\'s GPUs offer it (one '
                    'nova.conf for the fleet); else enable a type this '
                    'host offers, or load the vGPU manager that provides '
                    '%s' % tconf.type_id)
        for tconf in self.config.types:
            if tconf.device_addresses:
                self.claim_listed(tconf, tconf.type_id in offered)
        self.claim_default(
            [t for t in self.config.types if not t.device_addresses])
        self.check_idle_gpus()
        assigned = [self.assign(gpu_name, claim)
                    for gpu_name, claim in sorted(self.claims.items())]
        assigned = self.apply_max_instances(assigned)
        return Assignment(gpus=tuple(sorted(
            assigned, key=lambda a: (a.gpu.virtual, a.gpu.address))),
            problems=tuple(self.problems), notes=tuple(self.notes))

    def check_enabled(self) -> None:
        option = '[devices] %s' % self.config.option
        old = [t.group for t in self.config.types
               if t.group.startswith('vgpu_')]
        if self.config.option == 'enabled_vgpu_types' or old:
            self.notes.append(
                'old option names in use (%s): enabled_vgpu_types and '
                '[vgpu_<type>] device_addresses keep working, as in Nova '
                '(and this project\'s max_unit, reserved and feature_type '
                'there); the current names are [devices] enabled_mdev_types '
                'and [mdev_<type>]' % ', '.join(
                    ([option] if self.config.option == 'enabled_vgpu_types'
                     else []) + ['[%s]' % g for g in old]))
        for tconf in self.config.types:
            for name in tconf.ignored_old:
                self.problem(
                    findings.TYPE_OLD_GROUP_IGNORED, findings.WARNING,
                    '[vgpu_%s] %s' % (tconf.type_id, name), tconf.type_id,
                    'Nova reads %s only under [mdev_%s], so this value is '
                    'ignored, by Nova and by vgpu-nova-ext alike'
                    % (name, tconf.type_id),
                    'move it to [mdev_%s]' % tconf.type_id)
        for dup in self.config.duplicates:
            self.problem(findings.TYPE_DUPLICATE, findings.WARNING,
                         option, dup,
                         'type %s is listed more than once; it is used once'
                         % dup, 'list each type once')
        if not self.config.types and any(
                g.parents for g in self.snapshot.gpus):
            self.problem(
                findings.TYPE_NONE_ENABLED, findings.WARNING, option, '',
                'no mdev type is enabled, so this host offers no vGPU '
                'although its GPUs offer: %s'
                % _list(self.snapshot.offered_type_ids),
                'set [devices] enabled_mdev_types to the types to offer')

    def claim_listed(self, tconf: devices_conf.TypeConfig,
                     offered: bool) -> None:
        option = '[%s] device_addresses' % tconf.group
        for raw in tconf.device_addresses:
            try:
                parsed = addr.parse_device_address(raw)
            except ValueError as exc:
                self.problem(findings.ADDRESS_MALFORMED, findings.ERROR,
                             option, raw, str(exc), 'correct the address; '
                             'lspci -D prints the addresses of the host\'s '
                             'devices')
                continue
            found = self.by_address.get(parsed.value)
            if found is None:
                self.problem(
                    findings.ADDRESS_ABSENT, findings.WARNING, option, raw,
                    'no mdev-capable device %s on this host (it has: %s); '
                    'it serves nothing' % (parsed.value, _list(
                        g.address for g in self.snapshot.gpus)),
                    'correct the address, or check that the GPU is seated '
                    'and its driver loaded (lspci -D, dmesg)')
                continue
            gpu, parent = found
            scope = [parent] if parent else list(gpu.parents)
            if not offered:
                continue
            if not any(p.type(tconf.type_id) for p in scope):
                supported = sorted({t.id for p in scope for t in p.types})
                # The same address may hold another board on another host
                # of a fleet sharing one nova.conf: it serves nothing here.
                self.problem(
                    findings.ADDRESS_TYPE_UNSUPPORTED, findings.WARNING,
                    option, raw,
                    '%s does not offer type %s, so it serves none of it; it '
                    'offers: %s' % (parsed.value, tconf.type_id,
                                    _list(supported)),
                    'nothing to do if the address is another host\'s GPU '
                    '(one nova.conf for the fleet); else list this GPU '
                    'under one of the types it offers, or remove it from '
                    '[%s]' % tconf.group)
                continue
            self.add_claim(gpu, {p.name for p in scope}, tconf,
                           'device_addresses', option, raw)

    def add_claim(self, gpu, parents, tconf, source, option, raw) -> None:
        existing = self.claims.get(gpu.name)
        if existing is None:
            self.claims[gpu.name] = _Claim(tconf, set(parents), source)
            return
        if existing.type_config.type_id == tconf.type_id:
            existing.parents |= parents
            return
        self.problem(
            findings.ADDRESS_TWO_TYPES, findings.ERROR, option, raw,
            'GPU %s is already listed under type %s ([%s]); a physical GPU '
            'serves one type' % (gpu.address, existing.type_config.type_id,
                                 existing.type_config.group),
            'list the GPU (or its virtual functions) under one type only')

    def claim_default(self, defaults: list[devices_conf.TypeConfig]) -> None:
        if not defaults:
            return
        default = defaults[0]
        offered = default.type_id in self.snapshot.offered_type_ids
        for other in defaults[1:]:
            self.problem(
                findings.TYPE_SECOND_DEFAULT, findings.WARNING,
                '[%s] device_addresses' % other.group, '(unset)',
                'type %s has no device_addresses, but %s is already the '
                'default type; as in Nova, %s is not used' % (
                    other.type_id, default.type_id, other.type_id),
                'give [%s] device_addresses, or remove %s from '
                '[devices] %s' % (other.group, other.type_id,
                                  self.config.option))
        for gpu in self.snapshot.gpus:
            if gpu.name in self.claims or not gpu.parents:
                continue
            parents = {p.name for p in gpu.parents
                       if p.type(default.type_id)}
            if not parents:
                if not offered:
                    # Already an error: the type is nowhere on the host.
                    continue
                self.problem(
                    findings.GPU_DEFAULT_UNSUPPORTED, findings.WARNING,
                    'host GPU %s' % gpu.address, default.type_id,
                    'this GPU does not offer the default type %s, so it '
                    'serves nothing; it offers: %s' % (
                        default.type_id, _list(gpu.supported_type_ids)),
                    'list it under a type it offers in device_addresses')
                continue
            self.claims[gpu.name] = _Claim(default, parents, 'default')

    def check_idle_gpus(self) -> None:
        for gpu in self.snapshot.gpus:
            if gpu.parents:
                continue
            where = 'host GPU %s' % gpu.address
            if gpu.sriov and gpu.sriov_num_vfs == 0:
                self.problem(
                    findings.GPU_SRIOV_DISABLED, findings.WARNING, where,
                    'sriov_numvfs=0',
                    'this SR-IOV GPU has no virtual functions enabled, so '
                    'it offers no vGPU type (it can have %d)'
                    % gpu.sriov_total_vfs,
                    'nova-compute\'s start enables them on the GPUs this '
                    'host serves ([vgpu_nova_ext] bring_up_at_start), as '
                    'does "vgpu-nova-ext bring-up"; by hand: '
                    '"/usr/lib/nvidia/sriov-manage -e %s"' % gpu.address)
            else:
                self.problem(
                    findings.GPU_NO_MDEV, findings.WARNING,
                    where, 'no mdev_supported_types',
                    'this NVIDIA GPU offers no vGPU type',
                    'install and load the NVIDIA vGPU manager for KVM '
                    '(nvidia-vgpu-mgr), or ignore this GPU if it is meant '
                    'for PCI passthrough')

    def assign(self, gpu_name: str, claim: _Claim) -> GPUAssignment:
        gpu = next(g for g in self.snapshot.gpus if g.name == gpu_name)
        type_id = claim.type_config.type_id
        scope = [p for p in gpu.parents if p.name in claim.parents]
        all_parents = {p.name for p in gpu.parents}
        on_gpu = [d for d in self.snapshot.mediated_devices
                  if d.parent in all_parents]
        used = sum(1 for d in on_gpu
                   if d.type_id == type_id and d.parent in claim.parents)
        foreign: dict[str, int] = {}
        for dev in on_gpu:
            if dev.type_id != type_id:
                foreign[dev.type_id] = foreign.get(dev.type_id, 0) + 1
        if foreign:
            self.problem(
                findings.GPU_FOREIGN_DEVICES, findings.WARNING,
                'host GPU %s' % gpu.address,
                type_id,
                'this GPU serves %s but holds devices of %s; a time-sliced '
                'GPU holds one type at a time, so it can take no %s until '
                'they are gone' % (type_id, ', '.join(
                    '%s (%d)' % kv for kv in sorted(foreign.items())),
                    type_id),
                'remove the stale devices (vgpu-nova-ext devices lists '
                'them), or serve their type on this GPU')
        name = gpu.type_name(type_id)
        if name is None and gpu.sriov:
            self.problem(
                findings.TYPE_NAME_UNKNOWN, findings.WARNING,
                'host GPU %s' % gpu.address,
                type_id,
                'the GPU no longer lists %s (NVIDIA\'s driver lists a type '
                'only while a VF can take it) and its name was never read '
                'here, so its provider carries the type id trait only (a '
                'name trait it has is kept)' % type_id,
                'nothing to do: the name is read and remembered as soon as a '
                'VF of this GPU is free again; flavors can require %s '
                'meanwhile' % os_traits.normalize_name('VGPU_' + type_id))
        info = self.vendors.describe_on(gpu, type_id)
        max_unit = claim.type_config.max_unit
        # As many as a rule can tell apart: two (a pair refused), or one
        # past the type's most per VM.
        rule = self.vendors.combination_problem([info] * min(
            max_unit, (info.max_per_vm or 0) + 2))
        if rule and (type_id, max_unit) not in self._rules_told:
            self._rules_told.add((type_id, max_unit))
            self.problem(
                findings.TYPE_MAX_UNIT_RULE, findings.WARNING,
                '[%s] max_unit' % claim.type_config.group, max_unit,
                'lets one instance take %d vGPUs of %s from one GPU, which '
                'the vendor refuses: %s; such builds fail with that fault'
                % (max_unit, type_id, rule),
                'set max_unit = 1 for this type')
        most = most_per_gpu(gpu, info)
        if gpu.mixed_size is None and gpu.sriov and \
                info.max_per_gpu_mixed not in (None, info.max_per_gpu) and \
                not self._mixed_size_unknown_told:
            self._mixed_size_unknown_told = True
            self.notes.append(
                'whether a GPU is in NVIDIA\'s mixed-size mode is read '
                'through NVML; without it (pip install '
                'vgpu-nova-ext[nvml]) every GPU is taken to be in '
                'equal-size mode, and a GPU in mixed-size mode would be '
                'reported with more room than it has')
        if info.gpu_instance_profile is not None:
            idle = {p: n for p, n in (gpu.mig.layout() if gpu.mig else
                                      {}).items()
                    if p != info.gpu_instance_profile}
            if idle:
                self.problem(
                    findings.MIG_OTHER_PROFILES, findings.WARNING,
                    'host GPU %s' % gpu.address, ', '.join(
                        '%s: %d' % kv for kv in sorted(idle.items())),
                    'the GPU also has GPU instances of other profiles; this '
                    'release serves one type per GPU (%s, on %s instances), '
                    'so those stay unused: Placement could not tell which '
                    'unit of one inventory is which type' % (
                        type_id, info.gpu_instance_profile),
                    'carve only %s instances on this GPU ([%s] '
                    'mig_gpu_instances), or serve the other profile\'s type '
                    'on another GPU' % (info.gpu_instance_profile,
                                        claim.type_config.group))
        elif gpu.mixed_size and most != info.max_per_gpu:
            self.problem(
                findings.GPU_MIXED_SIZE, findings.WARNING,
                'host GPU %s' % gpu.address,
                'mixed-size mode',
                'the GPU is in NVIDIA\'s mixed-size (heterogeneous) '
                'mode, in which it holds at most %d of %s where '
                'equal-size mode holds %d; this release serves one type '
                'per GPU, so it reports %d' % (
                    most, name or type_id, info.max_per_gpu, most),
                'for the larger capacity turn mixed-size mode off '
                'while the GPU holds no vGPU: nvidia-smi vgpu -shm 0 '
                '-i <GPU index> (after sriov-manage -e, which resets '
                'it), then restart nova-compute')
        if gpu.sriov:
            free_vfs = sum(1 for p in scope if p.type(type_id)
                           and p.type(type_id).available_instances > 0)
            capacity = free_vfs + used
            if most is not None:
                capacity = min(capacity, max(most, used))
        else:
            available = sum(p.type(type_id).available_instances
                            for p in scope if p.type(type_id))
            capacity = available + used
            # No more than the vendor's table gives the type (a GPU that
            # reads more is wrong, and Placement refuses totals above its
            # largest integer: every periodic update would fail).
            bound = max(most or devices_conf.PLACEMENT_MAX_INT, used)
            if capacity > bound:
                self.problem(
                    findings.GPU_CAPACITY_BEYOND_TABLE, findings.WARNING,
                    'host GPU %s' % gpu.address, available,
                    'the GPU says %d more of %s fit, more than a GPU can '
                    'hold of it (%d); reported with %d' % (
                        available, type_id, bound, bound),
                    'check the GPU\'s driver (its available_instances); '
                    'nothing to do here')
                capacity = bound
        return GPUAssignment(
            gpu=gpu, type_id=type_id, type_name=name, type_info=info,
            resource_class=claim.type_config.mdev_class, capacity=capacity,
            used=used, parents=tuple(sorted(claim.parents)),
            source=claim.source, max_unit=claim.type_config.max_unit,
            reserved=claim.type_config.reserved)

    def apply_max_instances(self, assigned: list[GPUAssignment]):
        out = {a.gpu.name: a for a in assigned}
        for tconf in self.config.types:
            cap = tconf.max_instances
            mine = sorted((a for a in assigned if a.type_id == tconf.type_id),
                          key=lambda a: a.gpu.address)
            if cap is None or not mine:
                continue
            budget = cap - sum(a.used for a in mine)
            if budget < 0:
                self.problem(
                    findings.TYPE_MAX_INSTANCES_EXCEEDED, findings.WARNING,
                    '[%s] max_instances' % tconf.group, cap,
                    '%d devices of %s already exist, more than the cap; no '
                    'more will be offered' % (sum(a.used for a in mine),
                                              tconf.type_id),
                    'raise max_instances, or free devices of this type')
                budget = 0
            spread = []
            for a in mine:
                extra = min(a.capacity - a.used, budget)
                budget -= extra
                out[a.gpu.name] = dataclasses.replace(
                    a, capacity=a.used + extra)
                spread.append('%s=%d' % (a.gpu.address, a.used + extra))
            self.notes.append(
                '[%s] max_instances = %d spread over %d GPU(s) in address '
                'order: %s' % (tconf.group, cap, len(mine), ', '.join(spread)))
        return list(out.values())


def assign(config: devices_conf.DeviceConfig, snapshot: model.HostSnapshot,
           vendors: vendors_base.Vendors | None = None) -> Assignment:
    """Decide which type each GPU serves, with capacity and problems."""
    return _Mapper(config, snapshot, vendors or vendors_base.loaded()).run()
