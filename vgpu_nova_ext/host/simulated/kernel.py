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
"""The kernel and vGPU manager of a simulated host, journalled.

Carries out the writes made to a simulated host's sysfs attributes and the
MIG steps made to its GPUs, as the real ones would, crash-atomic.
"""

import contextlib
import errno
import fcntl
import json
import os
import shutil
import threading
import uuid as uuidlib

from vgpu_nova_ext.host import model
from vgpu_nova_ext.host.simulated import capacity
from vgpu_nova_ext.host.simulated import mig_state
from vgpu_nova_ext.host.simulated import nvidia_driver
from vgpu_nova_ext.host.simulated import parse
from vgpu_nova_ext.host.simulated import specs
from vgpu_nova_ext.host.simulated import tree
from vgpu_nova_ext.host.simulated import vgpu_scheduler_state
from vgpu_nova_ext.host import sysfs
from vgpu_nova_ext.host import vfio
from vgpu_nova_ext.host import vgpu_params


_KERNELS: dict[tuple[str, int], 'SimulatedKernel'] = {}
_KERNELS_LOCK = threading.Lock()


#: The simulated kernel's record of the change in progress.
JOURNAL = '.kernel.journal'
#: A file at the root of a simulated host naming its profile.
MARK = '.simulated-host.json'
#: Failures a test asks the simulated host for (see ``_race``).
FAULTS = '.faults'


class SimulatedKernel:
    """The kernel and vGPU manager of a simulated host.

    Carries out a write to ``create``, ``remove`` or a VF's
    ``current_vgpu_type`` as they would (a device appears,
    ``available_instances`` moves, ENOSPC when there is no room, EBUSY
    when a guest uses the device). It runs in the process of the host's
    owner: handed the checked writes of its backend, or reading those
    others made to the files (:mod:`.kernel_writes`).
    """

    def __init__(self, profile: specs.Profile, root: str) -> None:
        self.profile = profile
        self.root = root
        self.reader = sysfs.SysfsReader(root)
        self.tree = tree.SysfsTree(root)
        self.model = capacity.KernelModel(profile, (), mig_states={})
        self.mig = mig_state.MigStore(root)
        self._parents: dict[str, str] | None = None

    @classmethod
    def at(cls, root: str) -> 'SimulatedKernel':
        """The kernel of the simulated host laid out at ``root``."""
        path = os.path.join(root, MARK)
        key = (root, os.stat(path).st_mtime_ns)
        with _KERNELS_LOCK:
            kernel = _KERNELS.get(key)
            if kernel is None:
                with open(path) as f:
                    mark = json.load(f)
                kernel = _KERNELS[key] = cls(
                    parse.parse_profile(mark['profile'], mark['source']), root)
            return kernel

    @staticmethod
    def mark(profile: specs.Profile, root: str) -> None:
        tree.replace_file(
            os.path.join(root, MARK), json.dumps(
                {'source': profile.name, 'profile': profile.text}), 0o644)

    @staticmethod
    @contextlib.contextmanager
    def lock(root: str):
        with open(os.path.join(root, '.kernel.lock'), 'a') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def write(self, path: str, value: str) -> None:
        """A write to the attribute at ``path`` (resolved).

        Crash-atomic, as the kernel's are (a write to ``create`` completes
        even if the writer dies): once checked, the change is recorded in a
        journal before any file moves, and whatever a killed writer left
        half done is finished by the next write, or when the host is
        opened again.
        """
        name = os.path.basename(path)
        with self.lock(self.root):
            self.recover()
            if name == 'create':
                self._create(os.path.dirname(path), value.strip())
            elif name == 'remove':
                self._remove(os.path.dirname(path))
            elif name == vfio.CURRENT:
                self._set_vf_type(os.path.dirname(os.path.dirname(path)),
                                  value.strip())
            elif name == vgpu_params.ATTRIBUTE:
                nvidia_driver.set_params(path, value)
            else:
                raise _fail(errno.EACCES)

    # -- nvidia-smi and sriov-manage (MIG) ----------------------------------
    def mig_command(self, command: str, gpu_address: str,
                    argument: str = '') -> None:
        """What nvidia-smi and sriov-manage do to a GPU's MIG state.

        ``mig_mode`` (``1``/``0``), ``sriov_manage`` (``-e``: wipes the GPU
        instances) or ``create_gpu_instance`` (``<profile>:<start slice>``,
        as NVML creates one at a placement; a profile alone: at its first
        free placement, as nvidia-smi does). Each is one atomic replace of
        the GPU's state file.
        """
        with self.lock(self.root):
            self.recover()
            gpu = next((g for g in self.profile.gpus
                        if g.address == gpu_address), None)
            if command == 'vgpu_scheduler' and gpu is not None:
                nvidia_driver.set_scheduler(
                    self.root, gpu, [self._parent_dir(name) for name, _ in
                                     self.model._parents(gpu)], argument)
                return
            if gpu is None or not (
                    gpu.model.vfio or command == 'sriov_manage' and
                    gpu.model.sharing == specs.SRIOV):
                raise _fail(errno.ENODEV)
            if command == 'sriov_manage':
                self._race(gpu_address)
            enabled = self._vfs_enabled(gpu)
            state = self.mig.load(gpu_address)
            held = enabled and gpu.model.vfio and any(
                self.reader.vfio_current(self._parent_dir(name))
                for name, _ in self.model._parents(gpu))
            if command == 'mig_mode':
                if not gpu.model.mig_profiles:
                    raise _fail(errno.EOPNOTSUPP)
                mig_state.set_mode(state, argument == '1', held)
            elif command == 'sriov_manage':
                mig_state.wipe(state, held)
            elif command == 'create_gpu_instance':
                profile, _, start = argument.partition(':')
                mig_state.create_instance(
                    state, gpu.model.mig_profile_map(), profile,
                    int(start) if start else None)
            else:
                raise _fail(errno.EINVAL)
            if gpu.model.vfio:
                self.mig.save(gpu_address, state)
            if not enabled and command == 'sriov_manage':
                self._enable_vfs(gpu)
            elif enabled:
                self._recompute(self._parent_dir(
                    self.model._parents(gpu)[0][0]))

    def _race(self, gpu_address: str) -> None:
        """NVIDIA's sriov-manage race right after boot, where a test asks.

        ``<root>/.faults/sriov_manage/<GPU address>`` holds how many more
        tries fail (EBUSY), or ``always``.
        """
        path = os.path.join(self.root, FAULTS, 'sriov_manage', gpu_address)
        try:
            with open(path) as f:
                left = f.read().strip()
        except FileNotFoundError:
            return
        if left != 'always':
            if int(left) <= 0:
                return
            tree.replace_file(path, '%d\n' % (int(left) - 1), 0o644)
        raise _fail(errno.EBUSY)

    def _vfs_enabled(self, gpu: specs.GPUSpec) -> bool:
        """Whether an SR-IOV GPU has its VFs (any other GPU: True)."""
        if gpu.model.sharing != specs.SRIOV:
            return True
        return bool(self.reader._read_int(os.path.join(
            self.tree.device_dir(gpu.address), 'sriov_numvfs')))

    def _enable_vfs(self, gpu: specs.GPUSpec) -> None:
        """``sriov-manage -e`` on a GPU without VFs: they appear, untyped."""
        self.model.mig_states[gpu.address] = self.mig.load(gpu.address)
        tree.add_vfs(self.tree, gpu, self.model.gpu_available(gpu, []))
        self._parents = None

    # -- a host reboot -----------------------------------------------------
    def reboot(self) -> None:
        """What a host reboot leaves of the host.

        Gone: every mdev, every VF of an SR-IOV GPU (until ``sriov-manage
        -e``; a vendor-VFIO VF comes back untyped), every GPU instance,
        MIG mode where the model says so (``mig_mode_after_reboot``), a
        change in progress, each GPU's vGPU scheduler (a driver reload
        forgets it). Kept: the GPUs, their types, MIG mode where the
        model keeps it, and whatever lies outside sysfs (mdevctl's
        definitions, the service's state). mdevctl's start of its
        definitions at boot (udev's, on a real host) is not simulated: the
        service makes the same devices again, which is what mdevctl would
        have made.
        """
        with self.lock(self.root):
            states = {}
            for gpu in self.profile.gpus:
                if not gpu.model.vfio:
                    continue
                kept = (gpu.model.mig_mode_after_reboot ==
                        specs.MIG_MODE_KEPT and
                        self.mig.load(gpu.address)['mig'])
                states[gpu.address] = {'mig': bool(kept), 'instances': [],
                                       'vgpus': {}}
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._journal_path())
            vgpu_scheduler_state.forget(self.root)
            shutil.rmtree(os.path.join(self.root, 'sys'))
            tree.lay_out(self.profile, self.root, devices=(),
                         mig_states=states, vfs_enabled=False)
            self.model = capacity.KernelModel(self.profile, (),
                                              mig_states={})
            self._parents = None
            # Other processes' kernels of this host start afresh.
            self.mark(self.profile, self.root)

    # -- the journal -------------------------------------------------------
    def _journal_path(self) -> str:
        return os.path.join(self.root, JOURNAL)

    def _begin(self, op: str, **where: str) -> None:
        """Record a checked change; paths relative to the root."""
        tree.replace_file(self._journal_path(), json.dumps(dict(
            op=op, **{k: os.path.relpath(v, self.root) if k.endswith('_dir')
                      else v for k, v in where.items()})), 0o644)

    def _end(self) -> None:
        os.unlink(self._journal_path())

    def recover(self) -> None:
        """Finish the change a killed writer left half done, if any.

        Call with :meth:`lock` held.
        """
        try:
            with open(self._journal_path()) as f:
                record = json.load(f)
        except FileNotFoundError:
            return
        for key in list(record):
            if key.endswith('_dir'):
                record[key] = os.path.join(self.root, record[key])
        if record['op'] == 'create':
            self._do_create(record['type_dir'], record['device'])
        elif record['op'] == 'remove':
            self._do_remove(record['mdev_dir'], record['type_dir'])
        else:
            self._do_set_vf_type(record['vf_dir'], int(record['number']))
        self._end()

    def _device_dir(self, device_id: str) -> str:
        return os.path.join(self.reader.sys, 'bus', 'mdev', 'devices',
                            device_id)

    def _set_vf_type(self, vf_dir: str, value: str) -> None:
        """NVIDIA's driver on a write to ``current_vgpu_type``."""
        try:
            number = int(value)
        except ValueError:
            raise _fail(errno.EINVAL)
        nvidia = os.path.join(vf_dir, vfio.NVIDIA_DIR)
        current = self.reader.vfio_current(vf_dir)
        if number == 0:
            if os.path.exists(os.path.join(nvidia, IN_USE_MARK)):
                raise _fail(errno.EBUSY)
        elif current:
            raise _fail(errno.EBUSY)
        else:
            creatable = [n for n, _ in vfio.parse_creatable(
                self.reader._read(os.path.join(nvidia, vfio.CREATABLE)))]
            if number not in creatable:
                known = any(vfio.type_number(t.id) == number
                            for g in self.profile.gpus for t in g.model.types)
                raise _fail(errno.ENOSPC if known else errno.EINVAL)
        self._begin('vf_type', vf_dir=vf_dir, number=str(number))
        self._do_set_vf_type(vf_dir, number)
        self._end()

    def _do_set_vf_type(self, vf_dir: str, number: int) -> None:
        self._place_on_instance(vf_dir, number)
        tree.replace_file(
            os.path.join(vf_dir, vfio.NVIDIA_DIR, vfio.CURRENT),
            '%d\n' % number, 0o644)
        self._recompute(vf_dir)

    def _place_on_instance(self, vf_dir: str, number: int) -> None:
        """A MIG-backed vGPU lands on a GPU instance with room.

        The driver chooses; the VF shows which. Idempotent, for the journal.
        """
        vf = self.reader._parent_identity(vf_dir)[0]
        gpu = next(g for g in self.profile.gpus
                   if vf in [n for n, _ in self.model._parents(g)])
        state = self.mig.load(gpu.address)
        if not state['mig']:
            return
        vgpu_type = gpu.model.type(vfio.type_id(number)) if number else None
        gi = None
        if vgpu_type is not None and vgpu_type.gpu_instance_profile:
            gi_id = state['vgpus'].get(vf)
            gi = next((g for g in state['instances'] if g['id'] == gi_id),
                      None) or mig_state.instance_with_room(
                          state, vgpu_type.gpu_instance_profile,
                          vgpu_type.max_per_gi)
        if gi is None:
            state['vgpus'].pop(vf, None)
        else:
            state['vgpus'][vf] = gi['id']
        self.mig.save(gpu.address, state)
        nvidia = os.path.join(vf_dir, vfio.NVIDIA_DIR)
        tree.replace_file(os.path.join(nvidia, 'gpu_instance_id'),
                          '%d\n' % (gi['id'] if gi else 0), 0o644)
        tree.replace_file(os.path.join(nvidia, 'placement_id'),
                          '%d\n' % (gi['start'] if gi else 0), 0o644)

    def _create(self, type_dir: str, device_id: str) -> None:
        try:
            device_id = str(uuidlib.UUID(device_id))
        except ValueError:
            raise _fail(errno.EINVAL)
        if os.path.lexists(self._device_dir(device_id)):
            raise _fail(errno.EEXIST)
        if self.reader._read_int(os.path.join(
                type_dir, 'available_instances')) < 1:
            raise _fail(errno.ENOSPC)
        self._begin('create', type_dir=type_dir, device=device_id)
        self._do_create(type_dir, device_id)
        self._end()

    def _do_create(self, type_dir: str, device_id: str) -> None:
        """Make the device; also over what a killed create left."""
        parent_dir = os.path.dirname(os.path.dirname(type_dir))
        self.tree.add_mdev(parent_dir, device_id, os.path.basename(type_dir))
        self._recompute(parent_dir)

    def _remove(self, mdev_dir: str) -> None:
        if os.path.exists(os.path.join(mdev_dir, IN_USE_MARK)):
            raise _fail(errno.EBUSY)
        type_dir = os.path.realpath(os.path.join(mdev_dir, 'mdev_type'))
        self._begin('remove', mdev_dir=mdev_dir, type_dir=type_dir)
        self._do_remove(mdev_dir, type_dir)
        self._end()

    def _do_remove(self, mdev_dir: str, type_dir: str) -> None:
        """Take the device away; also what a killed remove left of it."""
        device_id = os.path.basename(mdev_dir)
        for link in (self._device_dir(device_id),
                     os.path.join(type_dir, 'devices', device_id)):
            if os.path.lexists(link):
                os.unlink(link)
        shutil.rmtree(mdev_dir, ignore_errors=True)
        self._recompute(os.path.dirname(mdev_dir))

    def _parent_dir(self, name: str) -> str:
        # Cached: parent devices change only when VFs are enabled (or a
        # reboot takes them), so a name not found reads them again.
        if self._parents is None or name not in self._parents:
            bus = os.path.join(self.reader.sys, 'class', 'mdev_bus')
            dirs = [self.reader._resolve(os.path.join(bus, entry))
                    for entry in self.reader._listdir(bus)]
            self._parents = {self.reader._parent_identity(d)[0]: d
                             for d in dirs + self.reader._vfio_vfs()}
        try:
            return self._parents[name]
        except KeyError:
            raise _fail(errno.ENODEV)

    def _recompute(self, parent_dir: str) -> None:
        """Rewrite available_instances on the GPU of ``parent_dir``."""
        parent = self.reader._parent_identity(parent_dir)[0]
        gpu = next(g for g in self.profile.gpus
                   if parent in [n for n, _ in self.model._parents(g)])
        dirs = {name: self._parent_dir(name)
                for name, _ in self.model._parents(gpu)}
        if gpu.model.vfio:
            self.model.mig_states[gpu.address] = self.mig.load(gpu.address)
        on_gpu = []
        if gpu.model.vfio:
            for name, pdir in dirs.items():
                current = self.reader.vfio_current(pdir)
                if current:
                    on_gpu.append(model.MediatedDevice(
                        name, name, vfio.type_id(current), model.VF))
            for name, types in self.model.gpu_available(gpu,
                                                        on_gpu).items():
                tree.replace_file(
                    os.path.join(dirs[name], vfio.NVIDIA_DIR,
                                 vfio.CREATABLE),
                    vfio.format_creatable(capacity.creatable(gpu.model,
                                                             types)))
            return
        for name, pdir in dirs.items():
            types_dir = os.path.join(pdir, 'mdev_supported_types')
            for type_id in os.listdir(types_dir):
                for entry in os.listdir(os.path.join(types_dir, type_id,
                                                     'devices')):
                    on_gpu.append(model.MediatedDevice(entry, name, type_id))
        for name, types in self.model.gpu_available(gpu, on_gpu).items():
            for type_id, count in types.items():
                self.tree.set_available_instances(dirs[name], type_id, count)


def _fail(code: int) -> OSError:
    return OSError(code, os.strerror(code))


IN_USE_MARK = tree.IN_USE_MARK
