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
from vgpu_nova_ext.host import address as addr
from vgpu_nova_ext.host import mig
from vgpu_nova_ext.host import model
from vgpu_nova_ext import mapping

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
    problems: tuple[mapping.Problem, ...] = ()


def plan(config: devices_conf.DeviceConfig, snapshot: model.HostSnapshot,
         intents: dict[str, str] | None = None) -> Plan:
    """The layout each GPU should get, and every problem with it.

    :param intents: layouts a crash left half carved ({GPU: layout}); such a
        GPU is carved again even if it looks done.
    """
    intents = intents or {}
    problems: list[mapping.Problem] = []
    out: list[GpuPlan] = []
    listed = {_address(a) for t in config.types if not t.mig_layout
              for a in t.device_addresses}
    for tconf in config.types:
        if not tconf.mig_layout:
            continue
        option = '[%s] mig_gpu_instances' % tconf.group
        wanted = dict(tconf.mig_layout)
        for gpu in _gpus_of(tconf, snapshot, listed, problems):
            where = 'host GPU %s' % gpu.address
            if not gpu.gpu_instance_profiles:
                problems.append(_not_mig_capable(gpu, option, tconf))
                continue
            profiles = {p.name: p for p in gpu.gpu_instance_profiles}
            try:
                order = mig.fit(profiles, wanted)
            except mig.LayoutError as exc:
                problems.append(mapping.Problem(
                    mapping.ERROR, 'mig.layout_does_not_fit', option,
                    mig.words(wanted), 'on GPU %s: %s' % (gpu.address, exc),
                    'declare a layout that fits (nvidia-smi mig -lgipp '
                    'lists each profile\'s placements)'))
                continue
            current = gpu.mig or mig.MigState(enabled=False)
            done = (current.enabled and current.layout() == wanted
                    and gpu.address not in intents)
            if done:
                out.append(GpuPlan(gpu.address, tconf.type_id,
                                   tconf.mig_layout, KEEP))
                continue
            held = _held(gpu, snapshot)
            if held:
                problems.append(mapping.Problem(
                    mapping.WARNING, 'mig.layout_in_use', where,
                    mig.words(wanted),
                    'the GPU has %s but holds vGPUs (%s), so its GPU '
                    'instances are left as they are: none a guest uses is '
                    'destroyed' % (mig.words(current.layout()) or
                                   'no GPU instance', ', '.join(held)),
                    'to change the layout: live- or cold-migrate (or '
                    'delete) the instances on this GPU (vgpu-nova-ext '
                    'devices lists them), then restart nova-compute, which '
                    'carves the declared layout on the emptied GPU'))
                out.append(GpuPlan(gpu.address, tconf.type_id,
                                   tconf.mig_layout, REFUSED))
                continue
            out.append(GpuPlan(gpu.address, tconf.type_id, tconf.mig_layout,
                               CARVE, tuple(order)))
    return Plan(gpus=tuple(out), problems=tuple(problems))


def carve(backend, gpu_plan: GpuPlan, ledger=None) -> None:
    """Carve one GPU's layout, in NVIDIA's order, intent first.

    :param ledger: where the intent is recorded; None only for a scratch
        copy of a simulated host (the commands' planning).
    :raises DeviceError: naming the step that failed; the intent stays in
        the ledger and the next start carves the GPU again.
    """
    if ledger is not None:
        ledger.begin_mig_layout(gpu_plan.gpu, gpu_plan.words)
    LOG.info('MIG: carving %s on GPU %s for %s', gpu_plan.words,
             gpu_plan.gpu, gpu_plan.type_id)
    backend.mig_command(gpu_plan.gpu, 'mig_mode', '1')
    # Wipes whatever GPU instances there were (none in use: checked).
    backend.mig_command(gpu_plan.gpu, 'sriov_manage', '-e')
    for profile, _ in gpu_plan.order:
        backend.mig_command(gpu_plan.gpu, 'create_gpu_instance', profile)
    if ledger is not None:
        ledger.end_mig_layout(gpu_plan.gpu)


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
                problems.append(mapping.Problem(
                    mapping.ERROR, 'mig.vf_address',
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


def _held(gpu: model.PhysicalGPU, snapshot: model.HostSnapshot
          ) -> list[str]:
    parents = {p.name for p in gpu.parents}
    return sorted(d.device_id for d in snapshot.mediated_devices
                  if d.parent in parents)


def _not_mig_capable(gpu: model.PhysicalGPU, option: str,
                     tconf: devices_conf.TypeConfig) -> mapping.Problem:
    return mapping.Problem(
        mapping.ERROR, 'mig.not_capable', option,
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
