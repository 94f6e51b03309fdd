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
"""What NVIDIA's driver does to a vGPU's parameters and a GPU's scheduler.

Called by the simulated kernel under its lock; each refuses as the real
driver would: a device's ``nvidia/vgpu_params`` while a guest uses it (the
plugin reads them when the guest starts), a GPU's vGPU scheduler while a
VM runs on it (NVML: "allowed to set only when no VM is running").
"""

import errno
import os

from vgpu_nova_ext.host.simulated import tree
from vgpu_nova_ext.host.simulated import vgpu_scheduler_state
from vgpu_nova_ext.host import vfio
from vgpu_nova_ext.host import vgpu_params
from vgpu_nova_ext.host import vgpu_scheduler

NVIDIA_VENDOR = '0x10de'


def _fail(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def set_params(path: str, value: str) -> None:
    """A write to ``<device>/nvidia/vgpu_params`` (resolved)."""
    nvidia = os.path.dirname(path)
    device = os.path.dirname(nvidia)
    # An mdev's mark is in its directory, a VF's in its nvidia/.
    if any(os.path.exists(os.path.join(d, tree.IN_USE_MARK))
           for d in (nvidia, device)):
        raise _fail(errno.EBUSY)
    try:
        pairs = vgpu_params.parse(value)
    except ValueError:
        raise _fail(errno.EINVAL)
    tree.replace_file(path, vgpu_params.text(pairs) + '\n', 0o644)


def set_scheduler(root: str, gpu, parent_dirs: list[str],
                  argument: str) -> None:
    """NVML's set of ``gpu``'s vGPU scheduler (its parents' directories)."""
    if gpu.model.vendor_id != NVIDIA_VENDOR:
        raise _fail(errno.ENODEV)
    for parent in parent_dirs:
        marks = [os.path.join(parent, vfio.NVIDIA_DIR, tree.IN_USE_MARK)] + [
            os.path.join(parent, entry, tree.IN_USE_MARK)
            for entry in os.listdir(parent)]
        if any(os.path.exists(m) for m in marks):
            raise _fail(errno.EBUSY)    # NVML_ERROR_IN_USE
    if not vgpu_scheduler_state.write(
            root, gpu.address, vgpu_scheduler.parse_argument(argument)):
        raise _fail(errno.EOPNOTSUPP)   # NVML_ERROR_NOT_SUPPORTED
