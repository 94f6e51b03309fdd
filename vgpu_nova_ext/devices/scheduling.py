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
"""The vGPU scheduler nova.conf declares per type, and what to do per GPU.

NVML sets a GPU's scheduler only while no VM runs on it: a GPU that runs
vGPUs keeps its policy until it is idle (the periodic task applies it
then), and ``check`` says so. Where NVML is not there, the scheduler can
be neither read nor set: said once, nothing is done.
"""

import dataclasses
import enum

from oslo_log import log as logging

from vgpu_nova_ext import exception
from vgpu_nova_ext import findings
from vgpu_nova_ext.host import vgpu_scheduler

LOG = logging.getLogger(__name__)


class Action(enum.StrEnum):
    KEEP = 'keep'
    """In force already."""
    APPLY = 'apply'
    """Idle: set it now."""
    WAIT = 'wait'
    """vGPUs run on the GPU: set it when none does."""
    UNKNOWN = 'unknown'
    """NVML is not there to read or set it."""
    CONFLICT = 'conflict'
    """The GPU's VFs serve types that declare different schedulers."""


@dataclasses.dataclass(frozen=True)
class GpuScheduler:
    gpu: str
    type_id: str
    group: str
    declared: vgpu_scheduler.SchedulerState
    actual: vgpu_scheduler.SchedulerState | None
    action: Action
    running: int = 0
    """The vGPUs NVIDIA's manager runs on the GPU."""

    def words(self) -> str:
        return 'declared %s, in force %s' % (
            self.declared.words(),
            self.actual.words() if self.actual else 'not known')


def plan(config, assignment) -> tuple[GpuScheduler, ...]:
    """Each GPU serving a type whose group declares ``vgpu_scheduler``."""
    declared = {t.type_id: t for t in config.types if t.scheduler}
    wanted: dict[str, set] = {}
    for served in assignment.gpus:
        if served.type_id in declared:
            wanted.setdefault(served.gpu.address, set()).add(
                declared[served.type_id].scheduler)
    out, seen = [], set()
    for served in assignment.gpus:
        tconf = declared.get(served.type_id)
        if tconf is None or served.gpu.address in seen:
            continue    # one step per GPU: its VFs may serve several types
        seen.add(served.gpu.address)
        gpu = served.gpu
        if len(wanted[gpu.address]) > 1:
            out.append(GpuScheduler(gpu.address, served.type_id,
                                    tconf.group, tconf.scheduler,
                                    gpu.vgpu_scheduler, Action.CONFLICT))
            continue
        running = len(gpu.manager_vgpus or ())
        if tconf.scheduler.satisfied_by(gpu.vgpu_scheduler):
            action = Action.KEEP
        elif gpu.vgpu_scheduler is None or gpu.manager_vgpus is None:
            action = Action.UNKNOWN
        elif running:
            action = Action.WAIT
        else:
            action = Action.APPLY
        out.append(GpuScheduler(gpu.address, served.type_id, tconf.group,
                                tconf.scheduler, gpu.vgpu_scheduler, action,
                                running))
    return tuple(out)


def problems(planned: tuple[GpuScheduler, ...]) -> list[findings.Finding]:
    """What ``check`` and the service log say of the plan."""
    out = []
    for p in planned:
        option = '[%s] vgpu_scheduler' % p.group
        if p.action == Action.WAIT:
            out.append(findings.Finding(
                findings.GPU_SCHEDULER_PENDING, findings.WARNING, option,
                p.declared.words(),
                'GPU %s runs %d vGPU(s), and NVML sets the vGPU scheduler '
                'only while none runs: %s; its provider keeps the trait of '
                'the policy in force' % (p.gpu, p.running, p.words()),
                'nothing: the periodic task sets it once the GPU is idle; '
                'to set it now, migrate its instances away (vgpu-nova-ext '
                'devices lists them)'))
        elif p.action == Action.CONFLICT:
            out.append(findings.Finding(
                findings.GPU_SCHEDULER_CONFLICT, findings.WARNING, option,
                p.declared.words(),
                'the VFs of GPU %s serve types whose groups declare '
                'different vGPU schedulers, and a GPU has one: none is set'
                % p.gpu,
                'declare the same vgpu_scheduler for every type served on '
                'one GPU'))
        elif p.action == Action.UNKNOWN:
            out.append(findings.Finding(
                findings.GPU_SCHEDULER_UNKNOWN, findings.WARNING, option,
                p.declared.words(),
                'GPU %s: the vGPU scheduler is read and set through NVML, '
                'which is not available here or does not offer it on this '
                'GPU (Pascal and newer), so it is left as the driver has it '
                'and no scheduler trait is reported' % p.gpu,
                'pip install vgpu-nova-ext[nvml] where NVIDIA\'s driver is '
                'loaded, or unset the option on GPUs older than Pascal'))
    return out


def apply(backend, planned: tuple[GpuScheduler, ...]
          ) -> tuple[list[str], list[findings.Finding]]:
    """Set the scheduler of each idle GPU that differs (privileged).

    :returns: (the GPUs set, a finding per GPU that refused).
    """
    done, failed = [], []
    for p in planned:
        if p.action != Action.APPLY:
            continue
        try:
            backend.mig_command(p.gpu, 'vgpu_scheduler',
                                p.declared.argument())
        except (exception.DeviceError, NotImplementedError) as exc:
            # A VM that started meanwhile (NVML_ERROR_IN_USE), a backend
            # that cannot: tried again at the next periodic task.
            failed.append(findings.Finding(
                findings.GPU_SCHEDULER_FAILED, findings.WARNING,
                '[%s] vgpu_scheduler' % p.group, p.declared.words(),
                'GPU %s: setting the vGPU scheduler failed: %s' % (
                    p.gpu, exc),
                'nothing if a guest started meanwhile (tried again when '
                'the GPU is idle); else as the message says'))
            continue
        LOG.info('vGPU scheduler of GPU %s set: %s (was %s)', p.gpu,
                 p.declared.words(),
                 p.actual.words() if p.actual else 'not known')
        done.append(p.gpu)
    return done, failed
