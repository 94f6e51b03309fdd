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
"""MIG on a simulated host: what nvidia-smi and NVIDIA's driver keep.

A GPU's MIG mode, its GPU instances and which vGPU runs on which of them
live in ``<root>/.nvidia-smi/<address>.json``, as the driver keeps them
outside sysfs. The rules are those of NVIDIA's vendor-specific VFIO
framework (field notes): MIG mode on before anything; ``sriov-manage -e``
wipes the GPU instances; a VF lists a MIG-backed type only while a GPU
instance of the type's profile has room; writing the type to the VF lands
the vGPU on such an instance (``gpu_instance_id``, ``placement_id``).
"""

import errno
import json
import os

from vgpu_nova_ext.host import mig

STATE_DIR = '.nvidia-smi'


def _fail(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class MigStore:
    """The MIG state of each GPU of one simulated host."""

    def __init__(self, root: str) -> None:
        self.root = root

    def _path(self, address: str) -> str:
        return os.path.join(self.root, STATE_DIR, address + '.json')

    def load(self, address: str) -> dict:
        try:
            with open(self._path(address)) as f:
                return json.load(f)
        except FileNotFoundError:
            return {'mig': False, 'instances': [], 'vgpus': {}}

    def save(self, address: str, state: dict) -> None:
        path = self._path(address)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(state, f)
        os.replace(tmp, path)

    def state(self, address: str) -> mig.MigState:
        raw = self.load(address)
        return mig.MigState(enabled=raw['mig'], instances=tuple(
            mig.GpuInstance(id=gi['id'], profile=gi['profile'],
                            start=gi['start']) for gi in raw['instances']))


def set_mode(state: dict, enabled: bool, vgpus_held: bool) -> None:
    """``nvidia-smi -i <gpu> -mig 1|0``."""
    if vgpus_held:
        raise _fail(errno.EBUSY)
    state['mig'] = enabled
    if not enabled:
        state['instances'] = []


def wipe(state: dict, vgpus_held: bool) -> None:
    """``sriov-manage -e``: the VFs again, and no GPU instance left."""
    if vgpus_held:
        raise _fail(errno.EBUSY)
    state['instances'] = []
    state['vgpus'] = {}


def create_instance(state: dict, profiles: dict[str, mig.GIProfile],
                    name: str, start: int | None = None) -> dict:
    """A GPU instance of profile ``name``.

    At slice ``start`` as NVML creates one with a placement, or at the
    first free placement (``nvidia-smi mig -cgi <profile> -C``).
    """
    if not state['mig']:
        raise _fail(errno.EPERM)    # "MIG mode is not enabled"
    profile = profiles.get(name)
    if profile is None:
        raise _fail(errno.EINVAL)
    used = set()
    for gi in state['instances']:
        used.update(range(gi['start'], gi['start'] + profiles[
            gi['profile']].size))
    free = [s for s in profile.placements
            if not used & set(range(s, s + profile.size))]
    if start is not None and start not in profile.placements:
        raise _fail(errno.EINVAL)   # "Invalid placement"
    if start is None:
        start = free[0] if free else None
    elif start not in free:
        start = None
    if start is None:
        raise _fail(errno.ENOSPC)   # "Insufficient resources"
    gi = {'id': max([g['id'] for g in state['instances']] + [0]) + 1,
          'profile': name, 'start': start}
    state['instances'].append(gi)
    return gi


def instance_with_room(state: dict, profile: str, per_gi: int
                       ) -> dict | None:
    """The first GPU instance of ``profile`` that can take one more vGPU."""
    held: dict[int, int] = {}
    for gi_id in state['vgpus'].values():
        held[gi_id] = held.get(gi_id, 0) + 1
    return next((gi for gi in state['instances']
                 if gi['profile'] == profile
                 and held.get(gi['id'], 0) < per_gi), None)
