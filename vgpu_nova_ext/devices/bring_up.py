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
"""After a host reboot: the virtual functions of the GPUs this host serves.

An SR-IOV GPU comes back from a reboot with no VF until ``sriov-manage -e``
runs (the field notes' "Host reboots"); NVIDIA documents a race right after
boot, so the step is retried with a bounded back-off and then given up,
naming the GPU, without holding up the other GPUs or nova-compute's start.

This is the first step of the bring-up, in NVIDIA's order. The next are
the MIG layouts (:mod:`.mig_layout`, which enables the VFs of the GPUs it
carves itself, after MIG mode), then each device the ledger gives to a
guest, made again with its UUID or VF and type (:mod:`.reconcile`).
Enabling VFs is idempotent: a GPU that has them is left alone, so a crash
half-way is finished by the next start, and running ``vgpu-nova-ext
bring-up`` before nova-compute too is harmless.
"""

import dataclasses
import time

from vgpu_nova_ext.conf import devices as devices_conf
from vgpu_nova_ext.devices import checkpoints
from vgpu_nova_ext import exception
from vgpu_nova_ext import findings
from vgpu_nova_ext.host import address
from vgpu_nova_ext.host import model

#: Seconds between tries of ``sriov-manage -e`` on one GPU, in order; its
#: tries are one more than these. At most ~15 s of waiting per GPU, plus
#: each try's own wait for the VFs (``device_timeout``).
BACKOFF = (1.0, 2.0, 4.0, 8.0)

#: The kernel driver of a GPU under NVIDIA's vGPU manager.
NVIDIA_DRIVER = 'nvidia'


@dataclasses.dataclass(frozen=True)
class Enable:
    """One GPU whose VFs are to be enabled, and why it is this host's."""

    gpu: str
    """The GPU's PCI address."""
    why: str


def plan(config: devices_conf.DeviceConfig, snapshot: model.HostSnapshot,
         ledger, mig_gpus: set[str]) -> list[Enable]:
    """The SR-IOV GPUs with no VF that this host serves.

    Those the ledger knows (its devices, or the types it read there), those
    nova.conf lists by address, and, when a type has no
    ``device_addresses`` (the default for every GPU, as in Nova), every
    NVIDIA GPU with SR-IOV. Not those with a MIG layout (``mig_gpus``):
    MIG mode comes first there, and the carving enables their VFs; nor
    those bound to another driver than NVIDIA's (a GPU passed through).
    """
    known = {e.gpu for e in ledger.all()} | {
        gpu for gpu, _ in ledger.type_names()}
    listed = set()
    for tconf in config.types:
        for raw in tconf.device_addresses:
            pci = address.normalize_pci_address(raw)
            if pci is not None:
                listed.add(pci)
    default = any(not t.device_addresses for t in config.types)
    out = []
    for gpu in snapshot.gpus:
        if gpu.virtual or not gpu.sriov or gpu.sriov_num_vfs \
                or gpu.address in mig_gpus:
            continue
        if gpu.driver not in (None, NVIDIA_DRIVER):
            # Bound to another driver (vfio-pci: passed through whole to
            # a guest): not the vGPU manager's, sriov-manage is not for it.
            continue
        if gpu.name in known:
            why = 'the ledger holds its devices or types'
        elif gpu.address in listed:
            why = 'nova.conf lists it in device_addresses'
        elif default and gpu.vendor_id == '0x10de':
            why = 'a type without device_addresses serves every GPU'
        else:
            continue
        out.append(Enable(gpu.address, why))
    return out


def enable(backend, gpu: str, timeout: float,
           backoff: tuple[float, ...] | None = None, sleep=time.sleep) -> int:
    """``sriov-manage -e`` on ``gpu`` until its VFs show; their number.

    :param backoff: :data:`BACKOFF` when None.
    :raises DeviceError: naming the GPU, the tries and the last failure,
        once ``backoff`` is spent.
    """
    backoff = BACKOFF if backoff is None else backoff
    last = None
    for attempt, pause in enumerate(tuple(backoff) + (None,), start=1):
        try:
            backend.mig_command(gpu, 'sriov_manage')
            vfs = _wait_for_vfs(backend, gpu, timeout)
            if vfs:
                checkpoints.reached('bring_up.vfs_enabled')
                return vfs
            last = 'no VF showed within %.0f s' % timeout
        except exception.DeviceError as exc:
            last = str(exc)
        if pause is None:
            break
        sleep(pause)
    raise exception.DeviceError(
        'GPU %s: its virtual functions could not be enabled after a host '
        'reboot (%d tries of sriov-manage -e over %.0f s; the last: %s); '
        'the GPU serves no vGPU until they are: run "/usr/lib/nvidia/'
        'sriov-manage -e %s" and restart nova-compute, and check the '
        'kernel\'s log (dmesg) and the vGPU manager (nvidia-vgpu-mgr)'
        % (gpu, attempt, sum(backoff), last, gpu))


def _wait_for_vfs(backend, gpu: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        found = next((g for g in backend.scan().gpus if g.address == gpu),
                     None)
        if found is not None and found.sriov_num_vfs and found.parents:
            return found.sriov_num_vfs
        if time.monotonic() >= deadline:
            return 0
        time.sleep(0.1)     # a scan of the host each time: not too often


def run(backend, steps: list[Enable], timeout: float,
        backoff: tuple[float, ...] | None = None,
        sleep=time.sleep) -> list[findings.Finding]:
    """Each step, each GPU on its own; a finding for each GPU left."""
    left = []
    for step in steps:
        try:
            enable(backend, step.gpu, timeout, backoff, sleep)
        except exception.DeviceError as exc:
            left.append(findings.Finding(
                findings.GPU_BRING_UP_FAILED, findings.ERROR,
                'host GPU %s' % step.gpu, 'sriov_numvfs=0', str(exc),
                'as the message says; the other GPUs are served'))
    return left
