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
"""The simulated vGPU manager's own view: NVML's active vGPUs.

NVIDIA's manager runs a vGPU while a guest uses its device (the simulated
kernel's in-use mark, whose content is the guest's UUID), and can hold
one the kernel no longer shows: :func:`hold` leaves such a stale vGPU on a
GPU, as a removed mdev or a leftover ``nvidia-vgpu-mgr`` would.
"""

import os
import uuid

from vgpu_nova_ext.host import model
from vgpu_nova_ext.host.simulated import kernel
from vgpu_nova_ext.host.simulated import tree
from vgpu_nova_ext.host import vfio

#: The vGPUs the manager holds beyond the in-use devices, per GPU address.
STORE = os.path.join('.nvml', 'manager_vgpus.json')
#: The host's driver version and each GPU's ECC mode, where set.
HOST_STORE = os.path.join('.nvml', 'host.json')
NVIDIA_VENDOR = '0x10de'
_NAMESPACE = uuid.UUID('6d1c7f3e-2b0a-4f5e-9a41-5f0e8c6b7a21')


def vgpu_uuid(device_id: str) -> str:
    """The simulated vGPU instance UUID of a device (stable)."""
    return str(uuid.uuid5(_NAMESPACE, device_id))


def _vm(mark: str) -> str | None:
    try:
        with open(mark) as f:
            text = f.read().strip()
        return str(uuid.UUID(text))
    except (OSError, ValueError):
        return None


def _held(root: str) -> dict:
    return tree.read_json(root, STORE)


def set_host(root: str, driver_version: str | None = None,
             ecc: dict[str, bool] | None = None) -> None:
    """The host's vGPU manager version and its GPUs' ECC modes.

    As NVML would give them; unset, NVML says nothing of them.
    """
    tree.write_json(root, HOST_STORE, {'driver_version': driver_version,
                                       'ecc': dict(ecc or {})})


def host_facts(root: str, gpu_address: str) -> tuple[str | None,
                                                     bool | None]:
    """(driver version, ECC mode) of a GPU, as :func:`set_host` set."""
    facts = tree.read_json(root, HOST_STORE)
    return facts.get('driver_version'), facts.get('ecc', {}).get(
        gpu_address)


def hold(root: str, gpu_address: str, vgpu: model.ManagerVgpu) -> None:
    """Leave a vGPU the manager holds on a GPU without a device."""
    held = _held(root)
    held.setdefault(gpu_address, []).append({
        'vgpu_uuid': vgpu.vgpu_uuid, 'device_id': vgpu.device_id,
        'type_id': vgpu.type_id, 'vm_id': vgpu.vm_id})
    tree.write_json(root, STORE, held)


def manager_vgpus(root: str, gpu: model.PhysicalGPU
                  ) -> tuple[model.ManagerVgpu, ...] | None:
    """What NVML would list on ``gpu``; None off NVIDIA's GPUs."""
    if gpu.vendor_id != NVIDIA_VENDOR or gpu.virtual:
        return None
    pci = os.path.join(root, 'sys', 'bus', 'pci', 'devices')
    found = []
    # Each parent's own directory (the GPU's, or its VFs'), as the kernel
    # lays an mdev below its parent: no walk over the host's every mdev.
    for parent in sorted({p.address for p in gpu.parents} | {gpu.address}):
        parent_dir = os.path.join(pci, parent)
        if not os.path.isdir(parent_dir):
            continue
        for name in sorted(os.listdir(parent_dir)):
            mark = os.path.join(parent_dir, name, kernel.IN_USE_MARK)
            if name == vfio.NVIDIA_DIR or not os.path.exists(mark):
                continue
            found.append(model.ManagerVgpu(
                vgpu_uuid=vgpu_uuid(name), device_id=name,
                type_id=os.path.basename(os.path.realpath(
                    os.path.join(parent_dir, name, 'mdev_type'))),
                vm_id=_vm(mark)))
        # A VF of NVIDIA's vendor-specific VFIO given a type and in use.
        mark = os.path.join(parent_dir, vfio.NVIDIA_DIR, kernel.IN_USE_MARK)
        if os.path.exists(mark):
            with open(os.path.join(parent_dir, vfio.NVIDIA_DIR,
                                   vfio.CURRENT)) as f:
                current = int(f.read().strip() or 0)
            if current:
                found.append(model.ManagerVgpu(
                    vgpu_uuid=vgpu_uuid(parent), device_id=None,
                    type_id=vfio.type_id(current), vm_id=_vm(mark)))
    for held in _held(root).get(gpu.address, ()):
        found.append(model.ManagerVgpu(**held))
    return tuple(sorted(found, key=lambda v: v.vgpu_uuid))
