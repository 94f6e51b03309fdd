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
"""The simulated driver's vGPU scheduler per GPU, as NVML keeps it.

Off until :func:`offer` (as the manager's version and ECC are unset until
``manager.set_host``), so that a simulated GPU shows what a host without
nvidia-ml-py shows. Offered: best effort until set; a set is refused while
a guest runs a vGPU on the GPU (NVML: "allowed to set only when no VM is
running"); a reboot (a driver reload) puts every GPU back to best effort.
"""

import os

from vgpu_nova_ext.host.simulated import tree
from vgpu_nova_ext.host import vgpu_scheduler

STORE = os.path.join('.nvml', 'vgpu_scheduler.json')
DEFAULT = vgpu_scheduler.SchedulerState(vgpu_scheduler.Policy.BEST_EFFORT)


def offer(root: str) -> None:
    """Let the host's NVML read and set the vGPU scheduler."""
    stored = tree.read_json(root, STORE)
    tree.write_json(root, STORE, {'gpus': stored.get('gpus', {})})


def read(root: str, gpu_address: str
         ) -> vgpu_scheduler.SchedulerState | None:
    """The GPU's scheduler; None where NVML does not offer it."""
    stored = tree.read_json(root, STORE)
    if not stored:
        return None
    found = stored['gpus'].get(gpu_address)
    return DEFAULT if found is None else vgpu_scheduler.parse_argument(found)


def write(root: str, gpu_address: str,
          state: vgpu_scheduler.SchedulerState) -> bool:
    """Set it; False where NVML does not offer it."""
    stored = tree.read_json(root, STORE)
    if not stored:
        return False
    stored['gpus'][gpu_address] = state.argument()
    tree.write_json(root, STORE, stored)
    return True


def forget(root: str) -> None:
    """A driver reload (reboot): every GPU back to best effort."""
    if tree.read_json(root, STORE):
        tree.write_json(root, STORE, {'gpus': {}})
