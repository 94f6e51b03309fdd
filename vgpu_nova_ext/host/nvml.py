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
"""What NVIDIA's management library says of a GPU that sysfs does not.

sysfs names a type only while a VF of NVIDIA's vendor-specific VFIO can
take it, and does not show whether a GPU is in mixed-size (heterogeneous)
mode. NVML (``nvidia-ml-py``, optional: ``pip install
vgpu-nova-ext[nvml]``) says both for every supported type. Without the
package or NVIDIA's library (no driver, a CI machine) there are no facts,
and nothing else changes: the ledger's remembered names stand in.
"""

import ctypes
import dataclasses

from oslo_log import log as logging

from vgpu_nova_ext import exception
from vgpu_nova_ext.host import mig as mig_mod
from vgpu_nova_ext.host import model
from vgpu_nova_ext.host import vfio
from vgpu_nova_ext.host import vgpu_scheduler

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class GpuFacts:
    """NVML's view of one physical GPU."""

    mixed_size: bool | None = None
    """Mixed-size (heterogeneous) mode on; None: not known."""
    type_names: tuple[tuple[str, str], ...] = ()
    """(type id as ``nvidia-<n>``, name) of every supported type."""
    max_per_vm: tuple[tuple[str, int], ...] = ()
    """(type id, most of it in one VM) of every supported type."""
    type_gi: tuple[tuple[str, str, int], ...] = ()
    """(type id, GPU instance profile, most per instance) of each
    MIG-backed type."""
    mig: 'mig_mod.MigState | None' = None
    """MIG mode and GPU instances; None: not MIG-capable or not known."""
    gpu_instance_profiles: tuple['mig_mod.GIProfile', ...] = ()
    """The GPU's GPU instance profiles (MIG-capable GPUs)."""
    manager_vgpus: tuple[model.ManagerVgpu, ...] | None = None
    """The vGPUs NVIDIA's manager runs on the GPU; None: not known."""
    manager_version: str | None = None
    """The host driver's (vGPU manager's) version; None: not known."""
    ecc: bool | None = None
    """ECC mode now; None: not known or not supported."""
    vgpu_scheduler: 'vgpu_scheduler.SchedulerState | None' = None
    """The vGPU scheduler in force; None: not known or not supported."""


class FactsSource:
    """Where a backend reads :class:`GpuFacts` from."""

    def describe(self) -> str:
        raise NotImplementedError

    def facts(self, gpu: model.PhysicalGPU) -> GpuFacts | None:
        raise NotImplementedError


class Nvml(FactsSource):
    """NVIDIA's library through ``pynvml`` (the nvidia-ml-py package)."""

    def __init__(self, pynvml) -> None:
        self._nvml = pynvml

    def describe(self) -> str:
        return 'NVML'

    def facts(self, gpu: model.PhysicalGPU) -> GpuFacts | None:
        if gpu.virtual:
            return None
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByPciBusId(gpu.address)
            names, per_vm = [], []
            supported = nvml.nvmlDeviceGetSupportedVgpus(handle)
            for number in supported:
                type_id = vfio.type_id(int(number))
                name = nvml.nvmlVgpuTypeGetName(number)
                if isinstance(name, bytes):
                    name = name.decode('utf-8', 'replace')
                names.append((type_id, name))
                per_vm.append((type_id, int(
                    nvml.nvmlVgpuTypeGetMaxInstancesPerVm(number))))
            try:
                mixed = bool(nvml.nvmlDeviceGetVgpuHeterogeneousMode(handle))
            except nvml.NVMLError:
                mixed = None    # a driver older than mixed-size mode
            profiles, state = self._mig(handle)
            type_gi = self._type_gi(supported, profiles)
        except nvml.NVMLError as exc:
            LOG.debug('NVML knows nothing of GPU %s: %s', gpu.address, exc)
            return None
        return GpuFacts(mixed_size=mixed, type_names=tuple(names),
                        max_per_vm=tuple(per_vm), type_gi=type_gi,
                        mig=state,
                        gpu_instance_profiles=profiles,
                        manager_vgpus=self._manager_vgpus(gpu, handle),
                        manager_version=self._driver_version(),
                        ecc=self._ecc(handle),
                        vgpu_scheduler=self._scheduler(handle))

    def _type_gi(self, supported, profiles) -> tuple[tuple[str, str, int],
                                                     ...]:
        """Each MIG-backed type's GPU instance profile and most per one.

        nvmlVgpuTypeGetGpuInstanceProfileId names the profile (INVALID for
        a time-sliced type); nvmlVgpuTypeGetMaxInstancesPerGpuInstance
        (R550 and later) says how many share one instance: one on Ampere
        and Hopper, several where Blackwell time-slices an instance. A
        driver without the latter call has one per instance.
        """
        if not profiles:
            return ()   # not MIG-capable: no type is MIG-backed
        nvml = self._nvml
        by_id = {p.id: p.name for p in profiles}
        found = []
        for number in supported:
            try:
                profile_id = int(
                    nvml.nvmlVgpuTypeGetGpuInstanceProfileId(number))
            except (nvml.NVMLError, AttributeError):
                continue
            name = by_id.get(profile_id)
            if name is None:
                continue    # time-sliced (INVALID), or a +me variant
            try:
                per_gi = int(
                    nvml.nvmlVgpuTypeGetMaxInstancesPerGpuInstance(number))
            except (nvml.NVMLError, AttributeError):
                per_gi = 1
            found.append((vfio.type_id(int(number)), name, max(per_gi, 1)))
        return tuple(found)

    def _driver_version(self) -> str | None:
        nvml = self._nvml
        try:
            version = nvml.nvmlSystemGetDriverVersion()
        except nvml.NVMLError:
            return None
        if isinstance(version, bytes):
            version = version.decode('ascii', 'replace')
        return str(version).strip() or None

    def _ecc(self, handle) -> bool | None:
        nvml = self._nvml
        try:
            current, _pending = nvml.nvmlDeviceGetEccMode(handle)
        except nvml.NVMLError:
            return None     # NVML_ERROR_NOT_SUPPORTED: a board without ECC
        return bool(current)

    def _scheduler(self, handle) -> 'vgpu_scheduler.SchedulerState | None':
        nvml = self._nvml
        try:
            state = nvml.nvmlDeviceGetVgpuSchedulerState(handle)
        except (nvml.NVMLError, AttributeError):
            return None     # pre-Pascal, or a driver without the call
        params = state.schedulerParams
        # Adaptive round robin (ARR) keeps the time slice in its own half
        # of the union.
        timeslice = (params.vgpuSchedDataWithARR.timeslice
                     if state.arrMode == nvml.NVML_VGPU_SCHEDULER_ARR_ENABLE
                     else params.vgpuSchedData.timeslice)
        return vgpu_scheduler.from_nvml(int(state.schedulerPolicy),
                                        int(timeslice))

    def set_vgpu_scheduler(self, pci_address: str,
                           state: 'vgpu_scheduler.SchedulerState') -> None:
        """Set the GPU's vGPU scheduler (privileged).

        NVML refuses while a VM runs on the GPU.

        :raises DeviceError: naming the GPU, the policy and NVML's word.
        """
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByPciBusId(pci_address.encode())
            wanted = nvml.c_nvmlVgpuSchedulerSetState_t()
            wanted.schedulerPolicy = vgpu_scheduler.NVML_NUMBERS[
                state.policy]
            wanted.enableARRMode = nvml.NVML_VGPU_SCHEDULER_ARR_DEFAULT
            wanted.schedulerParams.vgpuSchedData.timeslice = \
                vgpu_scheduler.nanoseconds(state)
            nvml.nvmlDeviceSetVgpuSchedulerState(handle, wanted)
        except nvml.NVMLError as exc:
            raise exception.DeviceError(
                'NVML could not set the vGPU scheduler of GPU %s to %s: %s'
                % (pci_address, state.words(), exc))

    def _manager_vgpus(self, gpu, handle):
        """NVML's active vGPUs of the GPU; None where NVML cannot say."""
        nvml = self._nvml

        def text(value) -> str | None:
            if value is None:
                return None
            if isinstance(value, bytes):
                value = value.decode('utf-8', 'replace')
            return str(value).strip() or None

        try:
            found = []
            for vgpu in nvml.nvmlDeviceGetActiveVgpus(handle):
                try:
                    mdev = text(nvml.nvmlVgpuInstanceGetMdevUUID(vgpu))
                except nvml.NVMLError:
                    mdev = None     # vendor-VFIO: no mdev to name
                vm_id, _ = nvml.nvmlVgpuInstanceGetVmID(vgpu)
                found.append(model.ManagerVgpu(
                    vgpu_uuid=text(nvml.nvmlVgpuInstanceGetUUID(vgpu)) or '',
                    device_id=mdev.lower() if mdev else None,
                    type_id=vfio.type_id(int(
                        nvml.nvmlVgpuInstanceGetType(vgpu))),
                    vm_id=(text(vm_id) or '').lower() or None))
        except nvml.NVMLError as exc:
            LOG.debug('NVML cannot list the vGPUs of GPU %s: %s',
                      gpu.address, exc)
            return None
        return tuple(sorted(found, key=lambda v: v.vgpu_uuid))

    def _mig(self, handle):
        """The GPU instance profiles and MIG state (none: not MIG-capable)."""
        nvml = self._nvml
        try:
            current, _ = nvml.nvmlDeviceGetMigMode(handle)
        except nvml.NVMLError:
            return (), None     # NVML_ERROR_NOT_SUPPORTED: no MIG
        profiles, instances = [], []
        for index in range(nvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
            try:
                info = nvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, index)
            except nvml.NVMLError:
                continue
            name = info.name.decode() if isinstance(info.name, bytes) \
                else info.name
            name = name.replace('MIG ', '').strip()
            if not mig_mod.is_profile_name(name):
                continue    # +me, -me, +gfx variants: not for a layout
            count = ctypes.c_uint(info.instanceCount)
            placements = (nvml.c_nvmlGpuInstancePlacement_t *
                          info.instanceCount)()
            nvml.nvmlDeviceGetGpuInstancePossiblePlacements(
                handle, info.id, placements, ctypes.byref(count))
            size = placements[0].size if count.value else info.sliceCount
            profiles.append(mig_mod.GIProfile(
                name=name, id=info.id, size=size, placements=tuple(
                    placements[i].start for i in range(count.value))))
            if not current:
                continue
            found = ctypes.c_uint(info.instanceCount)
            gis = (nvml.c_nvmlGpuInstance_t * info.instanceCount)()
            nvml.nvmlDeviceGetGpuInstances(handle, info.id, gis,
                                           ctypes.byref(found))
            for i in range(found.value):
                gi = nvml.nvmlGpuInstanceGetInfo(gis[i])
                instances.append(mig_mod.GpuInstance(
                    id=gi.id, profile=name, start=gi.placement.start))
        state = mig_mod.MigState(enabled=bool(current), instances=tuple(
            sorted(instances, key=lambda g: g.start)))
        return tuple(profiles), state

    def create_gpu_instance(self, pci_address: str, profile: str,
                            start: int) -> None:
        """A GPU instance of ``profile`` at slice ``start`` (privileged).

        :raises DeviceError: naming the GPU, the instance and NVML's word.
        """
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByPciBusId(pci_address.encode())
            profiles, _ = self._mig(handle)
            found = next((p for p in profiles if p.name == profile), None)
            if found is None:
                raise exception.DeviceError(
                    'GPU %s has no GPU instance profile %s (NVML lists %s)'
                    % (pci_address, profile,
                       ', '.join(p.name for p in profiles) or 'none'))
            placement = nvml.c_nvmlGpuInstancePlacement_t()
            placement.start, placement.size = start, found.size
            nvml.nvmlDeviceCreateGpuInstanceWithPlacement(
                handle, found.id, ctypes.byref(placement))
        except nvml.NVMLError as exc:
            raise exception.DeviceError(
                'NVML could not create a %s GPU instance at slice %d on GPU '
                '%s: %s' % (profile, start, pci_address, exc))


def open_nvml() -> Nvml | None:
    """NVML where the package and NVIDIA's library are both there."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        # No driver here (NVML_ERROR_LIBRARY_NOT_FOUND, DRIVER_NOT_LOADED):
        # the common case off a GPU host, not an error.
        LOG.info('NVML not used: %s', exc)
        return None
    return Nvml(pynvml)


def apply(snapshot: model.HostSnapshot,
          source: FactsSource | None) -> model.HostSnapshot:
    """``snapshot`` with each GPU's mode and the names sysfs did not give."""
    if source is None:
        return snapshot
    gpus = []
    changed = False
    for gpu in snapshot.gpus:
        facts = source.facts(gpu)
        if facts is None:
            gpus.append(gpu)
            continue
        changed = True
        known = dict(facts.type_names)
        per_vm = dict(facts.max_per_vm)
        on_gi = {type_id: (profile, most)
                 for type_id, profile, most in facts.type_gi}

        def told(t: model.VGPUType) -> model.VGPUType:
            profile, most = on_gi.get(t.id, (t.gpu_instance_profile,
                                             t.max_per_gi))
            return dataclasses.replace(
                t, name=t.name or known.get(t.id),
                max_per_vm=per_vm.get(t.id, t.max_per_vm),
                gpu_instance_profile=profile, max_per_gi=most)

        parents = tuple(dataclasses.replace(parent, types=tuple(
            told(t) for t in parent.types)) for parent in gpu.parents)
        gpus.append(dataclasses.replace(
            gpu, parents=parents, mixed_size=facts.mixed_size,
            mig=facts.mig, gpu_instance_profiles=facts.gpu_instance_profiles,
            manager_vgpus=facts.manager_vgpus,
            manager_version=facts.manager_version, ecc=facts.ecc,
            vgpu_scheduler=facts.vgpu_scheduler))
    if not changed:
        return snapshot
    return dataclasses.replace(snapshot, gpus=tuple(gpus))
