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
"""How much of each type a simulated GPU holds, as its kernel and driver say.

- ``time-sliced`` GPUs hold one vGPU type at a time; a type's available
  instances are its per-GPU maximum less the devices of it;
- ``sriov`` GPUs have one mdev parent per virtual function; a free VF shows
  1 for a type while the GPU can take one more device of it, 0 otherwise;
- ``pooled`` devices (the mtty sample) share a pool of units across types;
- in MIG mode, only MIG-backed types, where a GPU instance has room.
"""

from vgpu_nova_ext import exception
from vgpu_nova_ext.host import address
from vgpu_nova_ext.host import mig
from vgpu_nova_ext.host import model
from vgpu_nova_ext.host.simulated import mig_state
from vgpu_nova_ext.host.simulated import specs
from vgpu_nova_ext.host import vfio


def initial_mig_states(profile: specs.Profile) -> dict[str, dict]:
    """The MIG state of each GPU carved in the profile (MIG mode on)."""
    out = {}
    for gpu in profile.gpus:
        if not gpu.gpu_instances:
            continue
        state = {'mig': True, 'instances': [], 'vgpus': {}}
        profiles = gpu.model.mig_profile_map()
        for name, _ in mig.fit(profiles, dict(gpu.gpu_instances)):
            mig_state.create_instance(state, profiles, name)
        out[gpu.address] = state
    return out


class KernelModel:
    """Computes ``available_instances`` as the kernel and driver would."""

    def __init__(self, profile: specs.Profile,
                 devices: tuple[model.MediatedDevice, ...] | None = None,
                 mig_states: dict[str, dict] | None = None):
        self.profile = profile
        self.devices = (profile.mediated_devices if devices is None
                        else devices)
        #: {GPU address: MIG state} (mig_state's form).
        self.mig_states = (initial_mig_states(profile) if mig_states is None
                           else mig_states)

    def _parents(self, gpu: specs.GPUSpec) -> list[tuple[str, str | None]]:
        """(parent name, PCI address or None) of each mdev parent."""
        if gpu.model.sharing == specs.SRIOV:
            return [(address.libvirt_name(vf), vf)
                    for vf in gpu.vf_addresses()]
        return [(gpu.name, gpu.address)]

    def available(self) -> dict[str, dict[str, int]]:
        """{parent name: {type id: available instances}}."""
        result = {}
        for gpu in self.profile.gpus:
            parents = [name for name, _ in self._parents(gpu)]
            result.update(self.gpu_available(
                gpu, [d for d in self.devices if d.parent in parents]))
        return result

    def gpu_available(self, gpu: specs.GPUSpec,
                      on_gpu: list[model.MediatedDevice]
                      ) -> dict[str, dict[str, int]]:
        """{parent name: {type id: available}} of one GPU."""
        counts: dict[str, int] = {}
        for dev in on_gpu:
            counts[dev.type_id] = counts.get(dev.type_id, 0) + 1
        state = self.mig_states.get(gpu.address)
        if state is not None and state['mig']:
            # MIG mode: MIG-backed types only, where an instance has room.
            result = {}
            for parent, _ in self._parents(gpu):
                busy = any(d.parent == parent for d in on_gpu)
                result[parent] = {t.id: int(
                    not busy and t.gpu_instance_profile is not None
                    and mig_state.instance_with_room(
                        state, t.gpu_instance_profile, t.max_per_gi)
                    is not None) for t in gpu.model.types}
            return result
        self._check(gpu, counts)
        result = {}
        for parent, _ in self._parents(gpu):
            busy = any(d.parent == parent for d in on_gpu)
            result[parent] = {
                t.id: 0 if t.gpu_instance_profile
                else self._available(gpu, t, counts, busy)
                for t in gpu.model.types}
        return result

    def _check(self, gpu: specs.GPUSpec, counts: dict[str, int]) -> None:
        where = 'simulated host profile %s: GPU %s' % (
            self.profile.name, gpu.name)
        if gpu.model.sharing == specs.POOLED:
            used = sum(gpu.model.type(t).units * n for t, n in counts.items())
            if used > gpu.model.pool_units:
                raise exception.ProfileError(
                    '%s: its devices take %d units of %d' % (
                        where, used, gpu.model.pool_units))
            return
        if len(counts) > 1:
            raise exception.ProfileError(
                '%s: holds devices of types %s, but a time-sliced GPU holds '
                'one type at a time' % (where, ', '.join(sorted(counts))))
        for type_id, count in counts.items():
            most = gpu.model.type(type_id).most(gpu.mixed_size)
            if count > most:
                raise exception.ProfileError(
                    '%s: %d devices of %s, more than its max_instance%s '
                    '%d' % (where, count, type_id,
                            '_mixed' if gpu.mixed_size else '', most))

    @staticmethod
    def _available(gpu: specs.GPUSpec, vgpu_type: specs.TypeSpec,
                   counts: dict[str, int], busy: bool) -> int:
        spec = gpu.model
        if spec.sharing == specs.POOLED:
            used = sum(spec.type(t).units * n for t, n in counts.items())
            return (spec.pool_units - used) // vgpu_type.units
        if any(t != vgpu_type.id for t in counts):
            return 0
        left = vgpu_type.most(gpu.mixed_size) - counts.get(vgpu_type.id, 0)
        if spec.sharing == specs.SRIOV:
            return 1 if (left > 0 and not busy) else 0
        return left


def creatable(spec: specs.ModelSpec,
              available: dict[str, int]) -> list[tuple[int, str]]:
    """A vendor-VFIO VF's creatable types: those it could take now."""
    return [(vfio.type_number(t.id), t.name) for t in spec.types
            if available.get(t.id)]
