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
"""Every write this project makes to the host, with typed arguments.

The only code that opens a host file for writing. Each function checks
its arguments as the kernel names things (a device UUID, a PCI address, a
parent or type name), builds the path itself below the sysfs root (or
mdevctl's directory) and refuses a path that resolves anywhere else: no
caller can name a file. In production they run in the privsep daemon
(:mod:`vgpu_nova_ext.host.privsep`); in a process that needs no privilege
(root, or a simulated host it owns) they run in place.

A simulated host's backend passes its kernel as ``through`` (the
:class:`Kernel` seam): the checked write is then carried out by that kernel
instead of the file, as the real kernel carries out a write to a sysfs
attribute. Nothing here knows of the simulator; the privsep daemon never
passes a kernel, so it writes files only.
"""

import json
import os
import re
import typing
import uuid as uuidlib

from oslo_concurrency import processutils

from vgpu_nova_ext import exception
from vgpu_nova_ext.host import address
from vgpu_nova_ext.host import confined
from vgpu_nova_ext.host import mig
from vgpu_nova_ext.host import model
from vgpu_nova_ext.host import nvml
from vgpu_nova_ext.host import vfio
from vgpu_nova_ext.host import vgpu_params
from vgpu_nova_ext.host import vgpu_scheduler

# Names in sysfs and in mdevctl.d: the kernel's device and type names
# (0000:84:00.0, mtty, nvidia-18, i915-GVTg_V5_4); never "/" or "..".
_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}\Z')


class InvalidHostWrite(exception.DeviceError):
    """A host write with an argument no kernel name looks like."""

    code = 'vgpu_nova_ext.device.invalid'


class Kernel(typing.Protocol):
    """What carries out a host's writes when it is not the kernel."""

    def write(self, path: str, value: str) -> None:
        """A write of ``value`` to the attribute at ``path`` (resolved)."""

    def mig_command(self, command: str, gpu_address: str,
                    argument: str = '') -> None:
        """One step of :data:`MIG_COMMANDS` on one GPU."""


def _uuid(value: str) -> str:
    try:
        canonical = str(uuidlib.UUID(value))
    except (TypeError, ValueError, AttributeError):
        canonical = None
    if canonical != value:
        raise InvalidHostWrite(
            'device id %r is not a UUID in the kernel\'s form '
            '(8-4-4-4-12 lower-case hexadecimal digits); nothing was '
            'written' % (value,))
    return value


def _name(what: str, value: str, pattern: re.Pattern = _NAME_RE) -> str:
    if not isinstance(value, str) or not pattern.match(value) \
            or '..' in value:
        raise InvalidHostWrite(
            '%s %r is not a kernel device or type name (letters, digits '
            'and _.:+-, no "/" or ".."); nothing was written' % (what, value))
    return value


def _type(value: str) -> str:
    return _name('type', value, model.TYPE_ID_RE)


def _pci(value: str) -> str:
    pci = address.normalize_pci_address(value) if isinstance(
        value, str) else None
    if pci is None or pci != value:
        raise InvalidHostWrite(
            'VF address %r is not a PCI address DDDD:BB:SS.F; nothing was '
            'written' % (value,))
    return value


def _sys(sysfs_root: str) -> str:
    if not isinstance(sysfs_root, str) or not os.path.isabs(sysfs_root):
        raise InvalidHostWrite(
            'sysfs root %r is not an absolute path; set [vgpu_nova_ext] '
            'sysfs_root to one (/ on a real host)' % (sysfs_root,))
    return os.path.realpath(os.path.join(sysfs_root, 'sys'))


def _write_attribute(sysfs_root: str, parts: tuple[str, ...],
                     value: str, expect: tuple[str, ...],
                     through: Kernel | None) -> None:
    """Write ``value`` to the sysfs attribute ``sys/<parts...>``.

    Walked from ``sys/`` one directory descriptor at a time (see
    :mod:`vgpu_nova_ext.host.confined`): links are followed only within
    ``sys/``, and the path they lead to must end in ``expect`` (the
    device's own directory and attribute), so that no link swapped into
    place can turn a device's ``remove`` into its GPU's.
    """
    sys_dir = _sys(sysfs_root)
    shown = os.path.join(sys_dir, *parts)
    try:
        dir_fd, names = confined.walk(sys_dir, parts[:-1])
    except confined.Refused as exc:
        raise InvalidHostWrite('%s; nothing was written' % exc)
    try:
        if names[-len(expect) + 1:] != expect[:-1]:
            raise InvalidHostWrite(
                '%s leads to %s, not to %s; nothing was written' % (
                    shown, os.path.join(sys_dir, *names, parts[-1]),
                    os.path.join(*expect)))
        # O_TRUNC as a shell's "echo 1 > remove" (sysfs ignores it); never
        # when a kernel of the caller's carries the write out instead.
        fd = confined.open_file(
            dir_fd, parts[-1], os.O_WRONLY if through is not None
            else os.O_WRONLY | os.O_TRUNC, os.path.join(sys_dir, *names))
    except confined.Refused as exc:
        raise InvalidHostWrite('%s; nothing was written' % exc)
    finally:
        os.close(dir_fd)
    try:
        if through is None:
            # An attribute is there or the device is not: never created.
            os.write(fd, value.encode())
            return
    finally:
        os.close(fd)
    through.write(os.path.join(sys_dir, *names, parts[-1]), value)


# -- sysfs ---------------------------------------------------------------
def create_mdev(sysfs_root: str, parent: str, type_id: str,
                device_uuid: str, through: Kernel | None = None) -> None:
    """``<parent>/mdev_supported_types/<type>/create`` <- the UUID.

    :param parent: the parent's name on the mdev bus (a PCI address, or a
        virtual device's name such as ``mtty``).
    """
    parent, type_id = _name('parent', parent), _type(type_id)
    _write_attribute(sysfs_root, (
        'class', 'mdev_bus', parent, 'mdev_supported_types', type_id,
        'create'), _uuid(device_uuid),
        expect=(parent, 'mdev_supported_types', type_id, 'create'),
        through=through)


def remove_mdev(sysfs_root: str, device_uuid: str,
                through: Kernel | None = None) -> None:
    """``/sys/bus/mdev/devices/<uuid>/remove`` <- 1."""
    device_uuid = _uuid(device_uuid)
    _write_attribute(sysfs_root, (
        'bus', 'mdev', 'devices', device_uuid, 'remove'), '1',
        expect=(device_uuid, 'remove'), through=through)


def set_vf_vgpu_type(sysfs_root: str, vf_address: str, type_number: int,
                     through: Kernel | None = None) -> None:
    """A VF's ``nvidia/current_vgpu_type`` <- the type (0 frees it)."""
    if isinstance(type_number, bool) or not isinstance(type_number, int) \
            or not 0 <= type_number < 2 ** 31:
        raise InvalidHostWrite(
            'vGPU type number %r is not a whole number >= 0; nothing was '
            'written' % (type_number,))
    attribute = (_pci(vf_address), vfio.NVIDIA_DIR, vfio.CURRENT)
    _write_attribute(sysfs_root, ('bus', 'pci', 'devices') + attribute,
                     str(type_number), expect=attribute, through=through)


def set_vgpu_params(sysfs_root: str, kind: str, device_id: str,
                    content: str, through: Kernel | None = None) -> None:
    """A device's ``nvidia/vgpu_params`` <- ``name=value,...`` ('' clears).

    :param kind: ``mdev`` (``/sys/bus/mdev/devices/<uuid>/nvidia``) or
        ``vf`` (``/sys/bus/pci/devices/<VF>/nvidia``).
    """
    if kind == model.MDEV:
        device = ('bus', 'mdev', 'devices', _uuid(device_id))
    elif kind == model.VF:
        device = ('bus', 'pci', 'devices', _pci(device_id))
    else:
        raise InvalidHostWrite('device kind %r is not %s or %s; nothing was '
                               'written' % (kind, model.MDEV, model.VF))
    try:
        pairs = vgpu_params.parse(content)
    except ValueError as exc:
        raise InvalidHostWrite('%s; nothing was written' % exc)
    attribute = (device[-1], vfio.NVIDIA_DIR, vgpu_params.ATTRIBUTE)
    # What NVIDIA's guide writes: the pairs (a newline clears them).
    _write_attribute(sysfs_root, device + attribute[1:],
                     vgpu_params.text(pairs) or '\n', expect=attribute,
                     through=through)


# -- MIG: nvidia-smi and sriov-manage ------------------------------------
#: What each MIG step runs on a real host, in NVIDIA's order (field notes):
#: MIG mode on, sriov-manage -e (which wipes the GPU instances), then the
#: GPU instances.
MIG_COMMANDS = {
    'mig_mode': ('nvidia-smi', '-i', '{gpu}', '-mig', '{arg}'),
    'sriov_manage': ('/usr/lib/nvidia/sriov-manage', '-e', '{gpu}'),
    'create_gpu_instance': ('nvidia-smi', 'mig', '-i', '{gpu}', '-cgi',
                            '{arg}', '-C'),
    # NVML only (nvmlDeviceSetVgpuSchedulerState): <policy>:<ms or 0>.
    'vgpu_scheduler': None,
}


def mig_command(sysfs_root: str, gpu_address: str, command: str,
                argument: str = '', through: Kernel | None = None) -> None:
    """One MIG step on one GPU (see :data:`MIG_COMMANDS`).

    :raises DeviceError: naming the command and what it said.
    """
    if command not in MIG_COMMANDS:
        raise InvalidHostWrite('MIG step %r is not one of %s; nothing was '
                               'run' % (command, ', '.join(MIG_COMMANDS)))
    gpu = _pci(gpu_address)
    if command == 'mig_mode' and argument not in ('0', '1'):
        raise InvalidHostWrite('MIG mode %r is not 0 or 1; nothing was run'
                               % (argument,))
    if command == 'create_gpu_instance':
        profile, start = _gpu_instance(argument)
    if command == 'vgpu_scheduler':
        try:
            scheduler = vgpu_scheduler.parse_argument(argument)
        except ValueError as exc:
            raise InvalidHostWrite('%s; nothing was run' % exc)
    _sys(sysfs_root)
    if through is not None:
        through.mig_command(command, gpu, argument)
        return
    if command == 'vgpu_scheduler':
        found = nvml.open_nvml()
        if found is None:
            raise exception.DeviceError(
                'the vGPU scheduler of GPU %s is set through NVML, which is '
                'not there (pip install vgpu-nova-ext[nvml] where NVIDIA\'s '
                'driver is loaded); nothing was changed' % gpu)
        found.set_vgpu_scheduler(gpu, scheduler)
        return
    if command == 'create_gpu_instance':
        # At the planned placement where NVML is there to take one; else
        # nvidia-smi, which picks the first free one (the caller reads the
        # instances back and compares them with its plan).
        found = nvml.open_nvml()
        if found is not None:
            found.create_gpu_instance(gpu, profile, start)
            return
        argument = profile
    argv = [part.format(gpu=gpu, arg=argument)
            for part in MIG_COMMANDS[command]]
    try:
        processutils.execute(*argv)
    except (processutils.ProcessExecutionError, OSError) as exc:
        raise exception.DeviceError(
            '%s failed on GPU %s: %s' % (' '.join(argv), gpu, str(
                getattr(exc, 'stderr', '') or exc).strip()))


def _gpu_instance(argument: str) -> tuple[str, int]:
    """``<profile>:<start slice>`` -> (profile, start); checked."""
    profile, _, start = argument.partition(':') \
        if isinstance(argument, str) else ('', '', '')
    if not mig.is_profile_name(profile) or not start.isdigit() or \
            int(start) >= mig.SLICES:
        raise InvalidHostWrite(
            'GPU instance %r is not <profile>:<start slice> with a profile '
            'named as nvidia-smi names them (1g.18gb) and a slice from 0 to '
            '%d; nothing was run' % (argument, mig.SLICES - 1))
    return profile, int(start)


# -- mdevctl -------------------------------------------------------------
def _mdevctl_dir(mdevctl_path: str, parent: str, create: bool) -> int:
    """``<mdevctl_path>/<parent>``'s descriptor; never through a link."""
    if not isinstance(mdevctl_path, str) or not os.path.isabs(mdevctl_path):
        raise InvalidHostWrite(
            'mdevctl directory %r is not an absolute path; set '
            '[vgpu_nova_ext] mdevctl_path to one (/etc/mdevctl.d)' % (
                mdevctl_path,))
    try:
        if create:  # the configured directory itself, as mdevctl makes it
            os.makedirs(mdevctl_path, mode=0o755, exist_ok=True)
        return confined.open_directory(mdevctl_path, _name('parent', parent),
                                       create=create)
    except confined.Refused as exc:
        raise InvalidHostWrite('%s; nothing was written' % exc)


def write_mdevctl(mdevctl_path: str, parent: str, device_uuid: str,
                  type_id: str, params: str = '') -> None:
    """``<mdevctl_path>/<parent>/<uuid>``: the device, for mdevctl.

    :param params: the device's ``nvidia/vgpu_params`` (``name=value,...``),
        an attribute mdevctl writes when it makes the device ('' none).
    """
    name = _uuid(device_uuid)
    try:
        pairs = vgpu_params.parse(params)
    except ValueError as exc:
        raise InvalidHostWrite('%s; nothing was written' % exc)
    attrs = [{'%s/%s' % (vfio.NVIDIA_DIR, vgpu_params.ATTRIBUTE):
              vgpu_params.text(pairs)}] if pairs else []
    body = json.dumps({'mdev_type': _type(type_id), 'start': 'auto',
                       'attrs': attrs}, indent=2)
    dir_fd = _mdevctl_dir(mdevctl_path, parent, create=True)
    try:
        tmp = name + '.tmp'
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                     | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
        try:
            os.fchmod(fd, 0o644)    # whatever the umask: mdevctl reads it
            os.write(fd, body.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def remove_mdevctl(mdevctl_path: str, parent: str,
                   device_uuid: str) -> None:
    name = _uuid(device_uuid)
    try:
        dir_fd = _mdevctl_dir(mdevctl_path, parent, create=False)
    except FileNotFoundError:
        return
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    finally:
        os.close(dir_fd)
