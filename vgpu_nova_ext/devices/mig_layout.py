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
"""The MIG layouts nova.conf declares, planned and carved.

``[mdev_<type>] mig_gpu_instances`` says which GPU instances each GPU
serving a MIG-backed type should have. At start-up (nova-compute's, or
``vgpu-nova-ext reconcile``) each such GPU is compared with what it has:

- the same instances: nothing to do;
- a GPU that holds no vGPU: carved, in NVIDIA's order on the
  vendor-specific VFIO framework (MIG mode on, ``sriov-manage -e``, which
  wipes its instances, then the instances), the intent written to the
  ledger first so that a crash at any step is finished at the next start;
- a GPU that holds vGPUs: left as it is (no GPU instance a guest uses is
  ever destroyed), with a warning that says how to change it.

Which GPU serves which type is decided afterwards, by the mapping, from
what the GPUs then offer.
"""

import dataclasses

from oslo_log import log as logging

from vgpu_nova_ext.conf import devices as devices_conf
from vgpu_nova_ext.devices import checkpoints
from vgpu_nova_ext import exception
from vgpu_nova_ext import findings
from vgpu_nova_ext.host import address as addr
from vgpu_nova_ext.host import mig
from vgpu_nova_ext.host import model
from vgpu_nova_ext.vendors import base as vendors_base

LOG = logging.getLogger(__name__)

KEEP = 'keep'
CARVE = 'carve'
REFUSED = 'refused'


@dataclasses.dataclass(frozen=True)
class GpuPlan:
    """What one GPU's declared layout asks for now."""

    gpu: str
    """The GPU's PCI address."""
    type_id: str
    wanted: tuple[tuple[str, int], ...]
    action: str
    """:data:`KEEP`, :data:`CARVE` or :data:`REFUSED`."""
    order: tuple[tuple[str, int], ...] = ()
    """(profile, start slice) in creation order, for :data:`CARVE`."""

    @property
    def words(self) -> str:
        return mig.words(dict(self.wanted))


@dataclasses.dataclass(frozen=True)
class Plan:
    gpus: tuple[GpuPlan, ...]
    problems: tuple[findings.Finding, ...] = ()


@dataclasses.dataclass(frozen=True)
class Remembered:
    """What the ledger says of the host's MIG layouts and devices."""

    intents: dict[str, str] = dataclasses.field(default_factory=dict)
    """Layouts a crash left half carved: {GPU address: layout}."""
    layouts: dict[str, str] = dataclasses.field(default_factory=dict)
    """The layout last carved on each GPU: {GPU address: layout}."""
    held: tuple = ()
    """Ledger entries that a consumer holds (``Entry``)."""

    @classmethod
    def of(cls, ledger) -> 'Remembered':
        return cls(intents=ledger.mig_intents(),
                   layouts=ledger.mig_layouts(),
                   held=tuple(e for e in ledger.all()
                              if e.consumer is not None))


def plan(config: devices_conf.DeviceConfig, snapshot: model.HostSnapshot,
         remembered: Remembered | None = None,
         vendors: vendors_base.Vendors | None = None) -> Plan:
    """The layout each GPU should get, and every problem with it.

    :param remembered: the ledger's part: a GPU with an intent left (a
        crash while carving) is carved again even if it looks done; a GPU
        whose devices the ledger gives to guests keeps the layout they
        need, and gets it carved again if it lost its instances (a host
        reboot), whatever nova.conf declares now.
    """
    remembered = remembered or Remembered()
    vendors = vendors or vendors_base.loaded()
    problems: list[findings.Finding] = []
    out: list[GpuPlan] = []
    listed = {_address(a) for t in config.types if not t.mig_layout
              for a in t.device_addresses}
    asked: dict[str, list[tuple]] = {}
    for tconf in config.types:
        if tconf.mig_layout:
            for gpu in _gpus_of(tconf, snapshot, listed, problems):
                mine = asked.setdefault(gpu.address, [])
                if all(t is not tconf for t, _ in mine):
                    mine.append((tconf, gpu))
    for address, claims in asked.items():
        if len(claims) > 1:
            # A GPU has one layout: carving it for each in turn would
            # re-carve it at every start.
            problems.append(findings.Finding(
                findings.MIG_TWO_LAYOUTS, findings.ERROR, ', '.join(
                    '[%s] mig_gpu_instances' % t.group for t, _ in claims),
                ', '.join(mig.words(dict(t.mig_layout)) for t, _ in claims),
                'GPU %s is given a MIG layout by %d types (%s); a GPU has '
                'one layout and serves one type' % (
                    address, len(claims),
                    ', '.join(t.type_id for t, _ in claims)),
                'list the GPU under one MIG-backed type only ([mdev_<type>] '
                'device_addresses)'))
            continue
        (tconf, gpu), = claims
        gpu_plan = _plan_gpu(tconf, gpu, snapshot, remembered, vendors,
                             problems)
        if gpu_plan is not None:
            out.append(gpu_plan)
    return Plan(gpus=tuple(out), problems=tuple(problems))


def _plan_gpu(tconf, gpu, snapshot, remembered, vendors, problems
              ) -> GpuPlan | None:
    option = '[%s] mig_gpu_instances' % tconf.group
    wanted = dict(tconf.mig_layout)
    if not gpu.gpu_instance_profiles:
        problems.append(_not_mig_capable(gpu, option, tconf))
        return None
    info = vendors.describe_on(gpu, tconf.type_id)
    own = info.gpu_instance_profile
    if own is not None and own not in wanted:
        problems.append(findings.Finding(
            findings.MIG_LAYOUT_WITHOUT_TYPE_PROFILE, findings.ERROR, option,
            mig.words(wanted),
            'type %s (%s) runs on %s GPU instances, which the layout of GPU '
            '%s has none of: it would be carved and serve nothing' % (
                tconf.type_id, info.short_name or info.name, own,
                gpu.address),
            'declare %s instances ([%s] mig_gpu_instances = %s:<count>)'
            % (own, tconf.group, own)))
        return None
    profiles = {p.name: p for p in gpu.gpu_instance_profiles}
    try:
        order = mig.fit(profiles, wanted)
    except mig.LayoutError as exc:
        problems.append(findings.Finding(
            findings.MIG_LAYOUT_DOES_NOT_FIT, findings.ERROR, option,
            mig.words(wanted), 'on GPU %s: %s' % (gpu.address, exc),
            'declare a layout that fits (nvidia-smi mig -lgipp lists each '
            'profile\'s placements)'))
        return None
    current = gpu.mig or mig.MigState(enabled=False)
    if (current.enabled and current.layout() == wanted
            and gpu.address not in remembered.intents):
        return GpuPlan(gpu.address, tconf.type_id, tconf.mig_layout, KEEP)
    held = _held(gpu, snapshot, remembered)
    if not held:
        return GpuPlan(gpu.address, tconf.type_id, tconf.mig_layout, CARVE,
                       tuple(order))
    has_instances = current.enabled and bool(current.instances)
    needed = remembered.layouts.get(gpu.address)
    if not has_instances and needed is not None:
        # The host came back without its GPU instances (a reboot): the
        # layout the guests' devices were made on comes back first.
        try:
            layout = mig.parse_layout(needed)
            needed_order = mig.fit(profiles, layout)
        except (ValueError, mig.LayoutError) as exc:
            # The GPU no longer offers what was carved (another driver):
            # nothing is carved, the devices wait, the reason is said.
            problems.append(_in_use(gpu, wanted, held, 'its devices need '
                                    '%s, which cannot be carved again (%s)'
                                    % (needed, exc)))
            return GpuPlan(gpu.address, tconf.type_id, tconf.mig_layout,
                           REFUSED)
        if layout != wanted:
            problems.append(_in_use(gpu, wanted, held, 'its devices need '
                                    '%s, carved again as it was' % needed))
        return GpuPlan(gpu.address, tconf.type_id,
                       tuple(sorted(layout.items())), CARVE,
                       tuple(needed_order))
    problems.append(_in_use(gpu, wanted, held, 'it has %s, left as it is: '
                            'none a guest uses is destroyed' % (
                                mig.words(current.layout()) or
                                'no GPU instance')))
    return GpuPlan(gpu.address, tconf.type_id, tconf.mig_layout, REFUSED)


def _in_use(gpu, wanted, held, what) -> findings.Finding:
    return findings.Finding(
        findings.MIG_LAYOUT_IN_USE, findings.WARNING,
        'host GPU %s' % gpu.address,
        mig.words(wanted),
        'the GPU holds vGPUs (%s), so it does not get the declared layout: '
        '%s' % (', '.join(held), what),
        'to change the layout: live- or cold-migrate (or delete) the '
        'instances on this GPU (vgpu-nova-ext devices lists them), then '
        'restart nova-compute, which carves the declared layout on the '
        'emptied GPU')


def carve(backend, gpu_plan: GpuPlan, ledger=None) -> None:
    """Carve one GPU's layout, in NVIDIA's order, intent first.

    :param ledger: where the intent is recorded; None only for a scratch
        copy of a simulated host (the commands' planning).
    :raises DeviceError: naming the step that failed; the intent stays in
        the ledger and the next start carves the GPU again.
    """
    if ledger is not None:
        ledger.begin_mig_layout(gpu_plan.gpu, gpu_plan.words)
        checkpoints.reached('mig.intent_written')
    LOG.info('MIG: carving %s on GPU %s for %s', gpu_plan.words,
             gpu_plan.gpu, gpu_plan.type_id)
    backend.mig_command(gpu_plan.gpu, 'mig_mode', '1')
    checkpoints.reached('mig.mode_set')
    # Wipes whatever GPU instances there were (none in use: checked).
    backend.mig_command(gpu_plan.gpu, 'sriov_manage', '-e')
    for profile, start in gpu_plan.order:
        backend.mig_command(gpu_plan.gpu, 'create_gpu_instance',
                            '%s:%d' % (profile, start))
        checkpoints.reached('mig.instance_created')
    # Where nvidia-smi placed them (no NVML to place them), the driver
    # chose: the result must be the plan, or nothing is left carved.
    state = _mig_of(backend, gpu_plan.gpu)
    carved = sorted((gi.profile, gi.start) for gi in state.instances) \
        if state is not None else None
    if state is None:
        LOG.warning('MIG: the GPU instances of GPU %s cannot be read back '
                    'here (no NVML): not compared with the plan (%s)',
                    gpu_plan.gpu, _at(gpu_plan.order))
    elif carved != sorted(gpu_plan.order):
        backend.mig_command(gpu_plan.gpu, 'sriov_manage', '-e')
        raise exception.DeviceError(
            'GPU %s was carved as %s, not as planned (%s); its GPU '
            'instances were removed again (sriov-manage -e) and the next '
            'start carves it again: install nvidia-ml-py (pip install '
            'vgpu-nova-ext[nvml]) where the privileged daemon runs, so that '
            'each instance is created at its planned placement' % (
                gpu_plan.gpu, _at(carved) or 'nothing', _at(gpu_plan.order)))
    if ledger is not None:
        ledger.end_mig_layout(gpu_plan.gpu, gpu_plan.words)


def _mig_of(backend, address: str) -> mig.MigState | None:
    """The GPU's MIG state as the host reads it; None: cannot tell."""
    gpu = next((g for g in backend.scan().gpus if g.address == address),
               None)
    return gpu.mig if gpu is not None else None


def _at(placed) -> str:
    return ', '.join('%s at slice %d' % p for p in placed)


def _gpus_of(tconf: devices_conf.TypeConfig, snapshot: model.HostSnapshot,
             listed: set[str], problems: list) -> list[model.PhysicalGPU]:
    """The physical GPUs a type's layout is for."""
    by_address = {g.address: g for g in snapshot.gpus if not g.virtual}
    if not tconf.device_addresses:
        # As the default type: every MIG-capable GPU no other type lists.
        return [g for g in by_address.values()
                if g.gpu_instance_profiles and g.address not in listed]
    out = []
    for raw in tconf.device_addresses:
        value = _address(raw)
        if value is None:
            continue
        gpu = by_address.get(value)
        if gpu is None:
            if any(value in [p.address for p in g.parents]
                   for g in by_address.values()):
                problems.append(findings.Finding(
                    findings.MIG_VF_ADDRESS, findings.ERROR,
                    '[%s] device_addresses' % tconf.group, raw,
                    'a MIG layout is carved on a whole GPU, but %s is one '
                    'of its virtual functions' % value,
                    'list the physical GPU\'s address'))
            continue    # absent: the mapping warns
        out.append(gpu)
    return out


def _address(raw: str) -> str | None:
    try:
        return addr.parse_device_address(raw).value
    except ValueError:
        return None     # the mapping names it


def _held(gpu: model.PhysicalGPU, snapshot: model.HostSnapshot,
          remembered: Remembered) -> list[str]:
    """Devices on the GPU: on the host, or the ledger's for a consumer."""
    parents = {p.name for p in gpu.parents}
    return sorted({d.device_id for d in snapshot.mediated_devices
                   if d.parent in parents} |
                  {e.device_id for e in remembered.held
                   if e.gpu == gpu.name})


def _not_mig_capable(gpu: model.PhysicalGPU, option: str,
                     tconf: devices_conf.TypeConfig) -> findings.Finding:
    return findings.Finding(
        findings.MIG_NOT_CAPABLE, findings.ERROR, option,
        mig.words(dict(tconf.mig_layout)),
        'GPU %s reports no GPU instance profile, so it cannot be carved: it '
        'is not MIG-capable, or it is on the mdev bus (vGPU 16 and older), '
        'where this release does not carve GPU instances, or NVML is not '
        'installed to say' % gpu.address,
        'on the mdev bus: carve by hand before nova-compute starts '
        '(nvidia-smi mig -cgi ...) and remove mig_gpu_instances, the '
        'MIG-backed types the GPU then offers are served as any other; '
        'on the vendor-specific VFIO framework: pip install '
        'vgpu-nova-ext[nvml]; else remove the GPU from [%s] '
        'device_addresses' % tconf.group)
