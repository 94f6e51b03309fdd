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
"""A simulated host, described by a profile file (YAML).

The simulated backend lays the profile out as a kernel-style sysfs tree in a
private temporary directory (:mod:`.tree`) and reads it back with the
sysfs reader, so the simulated host and a real one share the read path.
Available instances follow the kernel's rules:

- ``time-sliced`` GPUs hold one vGPU type at a time; a type's available
  instances are its per-GPU maximum less the devices of it;
- ``sriov`` GPUs have one mdev parent per virtual function; a free VF shows
  1 for a type while the GPU can take one more device of it, 0 otherwise;
- ``pooled`` devices (the mtty sample) share a pool of units across types.

Modules, one job each: :mod:`.specs` (what a profile describes),
:mod:`.parse` (reading one), :mod:`.capacity` (available instances),
:mod:`.mig_state` (MIG as nvidia-smi keeps it), :mod:`.tree` (the sysfs
tree), :mod:`.kernel` (the writes carried out), :mod:`.backend` (the host
backend and its NVML). The names below are the simulator's public face.
"""

from vgpu_nova_ext.host.simulated import backend
from vgpu_nova_ext.host.simulated import capacity
from vgpu_nova_ext.host.simulated import kernel
from vgpu_nova_ext.host.simulated import parse
from vgpu_nova_ext.host.simulated import specs
from vgpu_nova_ext.host.simulated import tree

TIME_SLICED = specs.TIME_SLICED
SRIOV = specs.SRIOV
POOLED = specs.POOLED
Profile = specs.Profile
builtin_profiles = parse.builtin_profiles
load_profile = parse.load_profile
parse_profile = parse.parse_profile
KernelModel = capacity.KernelModel
lay_out = tree.lay_out
JOURNAL = kernel.JOURNAL
IN_USE_MARK = kernel.IN_USE_MARK
SimulatedKernel = kernel.SimulatedKernel
SimulatedBackend = backend.SimulatedBackend
SimulatedNvml = backend.SimulatedNvml
