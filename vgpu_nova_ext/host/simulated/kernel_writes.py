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
"""How a simulated host's writes reach its kernel.

Two ways, both in the process of the host's owner, never in the privileged
daemon:

- :class:`KernelWriter`: the backend's writer on a host its process owns.
  The writes of :mod:`vgpu_nova_ext.host.writes`, checked and confined as
  on a real host, handed to the kernel (their ``through`` seam) instead of
  the file, so that an error (ENOSPC, EBUSY) reaches the writer as the real
  kernel's does.
- :func:`watching`: a host owned by another user (root), written as a real
  host is, through the privsep daemon, which writes plain files. The
  owner's kernel reads what was written to ``create``, ``remove`` and the
  VFs' ``current_vgpu_type`` and carries it out, as the real kernel acts
  on a write; a write it refuses is undone and only logged. Two things
  differ from the real kernel, so a refusal is for the in-place writer to
  test: a mediated device that is refused never appears (its writer waits
  in vain), and a VF shows the type written to it until the kernel has
  carried the write out or undone it.
"""

import contextlib
import logging
import os
import threading

from vgpu_nova_ext import exception
from vgpu_nova_ext.host.simulated import kernel as kernel_mod
from vgpu_nova_ext.host.simulated import tree
from vgpu_nova_ext.host import vfio
from vgpu_nova_ext.host import writes

LOG = logging.getLogger(__name__)


class KernelWriter:
    """The host writes of ``writes``, carried out by a simulated kernel."""

    def __init__(self, kernel: kernel_mod.SimulatedKernel) -> None:
        self.kernel = kernel

    def create_mdev(self, sysfs_root: str, parent: str, type_id: str,
                    device_uuid: str) -> None:
        writes.create_mdev(sysfs_root, parent, type_id, device_uuid,
                           through=self.kernel)

    def remove_mdev(self, sysfs_root: str, device_uuid: str) -> None:
        writes.remove_mdev(sysfs_root, device_uuid, through=self.kernel)

    def set_vf_vgpu_type(self, sysfs_root: str, vf_address: str,
                         type_number: int) -> None:
        writes.set_vf_vgpu_type(sysfs_root, vf_address, type_number,
                                through=self.kernel)

    def set_vgpu_params(self, sysfs_root: str, kind: str, device_id: str,
                        content: str) -> None:
        writes.set_vgpu_params(sysfs_root, kind, device_id, content,
                               through=self.kernel)

    def mig_command(self, sysfs_root: str, gpu_address: str, command: str,
                    argument: str = '') -> None:
        writes.mig_command(sysfs_root, gpu_address, command, argument,
                           through=self.kernel)

    # mdevctl's files are files on any host.
    write_mdevctl = staticmethod(writes.write_mdevctl)
    remove_mdevctl = staticmethod(writes.remove_mdevctl)


@contextlib.contextmanager
def watching(kernel: kernel_mod.SimulatedKernel, interval: float = 0.005):
    """Carry out the writes others make to the host's files, meanwhile.

    Use it in the process of the host's owner while another process (the
    privsep daemon) writes the host: a thread reads the files every
    ``interval`` seconds.
    """
    reader = kernel.reader
    vf_types = {vf: reader.vfio_current(vf) for vf in reader._vfio_vfs()}
    stop = threading.Event()
    thread = threading.Thread(target=_watch, name='simulated-kernel',
                              args=(kernel, vf_types, stop, interval),
                              daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _watch(kernel: kernel_mod.SimulatedKernel, vf_types: dict[str, int],
           stop: threading.Event, interval: float) -> None:
    reader = kernel.reader
    while not stop.wait(interval):
        for path, value in _written(kernel):
            _carry_out(kernel, path, value)
        # A VF's attribute is read back as the kernel's answer too: put
        # back what each VF held before any is carried out, so that the
        # kernel sees one change at a time.
        try:
            changed = {vf: reader.vfio_current(vf) for vf in vf_types}
        except exception.HostReadError:
            continue    # a write under way (opened, not yet written)
        changed = {vf: n for vf, n in changed.items() if n != vf_types[vf]}
        for vf in changed:
            _put(_current(vf), '%d\n' % vf_types[vf])
        for vf, written in changed.items():
            _carry_out(kernel, _current(vf), str(written))
            vf_types[vf] = reader.vfio_current(vf)


def _current(vf: str) -> str:
    return os.path.join(vf, vfio.NVIDIA_DIR, vfio.CURRENT)


def _written(kernel: kernel_mod.SimulatedKernel):
    """(attribute, value) of each ``create`` and ``remove`` written to."""
    sys_dir = kernel.reader.sys
    bus = os.path.join(sys_dir, 'class', 'mdev_bus')
    for parent in _listdir(bus):
        types = os.path.join(bus, parent, 'mdev_supported_types')
        for type_id in _listdir(types):
            yield from _pending(os.path.join(types, type_id, 'create'))
    devices = os.path.join(sys_dir, 'bus', 'mdev', 'devices')
    for device in _listdir(devices):
        yield from _pending(os.path.join(devices, device, 'remove'))


def _listdir(path: str) -> list[str]:
    """Its entries; none where there is no such directory (yet)."""
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def _pending(path: str):
    try:
        with open(path) as f:
            value = f.read()
    except FileNotFoundError:     # a device removed meanwhile
        return
    if value:
        _put(path, '')
        yield os.path.realpath(path), value


def _put(path: str, value: str) -> None:
    """Replace the attribute's value in one step, keeping its mode."""
    tree.replace_file(path, value, os.stat(path).st_mode & 0o777)


def _carry_out(kernel: kernel_mod.SimulatedKernel, path: str,
               value: str) -> None:
    try:
        kernel.write(path, value)
    except (OSError, exception.VGPUNovaExtError) as exc:
        LOG.warning('simulated kernel: the write of %r to %s was refused: '
                    '%s', value.strip(), path,
                    getattr(exc, 'strerror', None) or exc)
