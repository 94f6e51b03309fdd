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
"""The simulated host's backend, and the NVML it answers with.
"""

import os
import shutil
import tempfile

from vgpu_nova_ext.host import model
from vgpu_nova_ext.host import nvml
from vgpu_nova_ext.host.simulated import kernel
from vgpu_nova_ext.host.simulated import kernel_writes
from vgpu_nova_ext.host.simulated import manager
from vgpu_nova_ext.host.simulated import mig_state
from vgpu_nova_ext.host.simulated import parse
from vgpu_nova_ext.host.simulated import specs
from vgpu_nova_ext.host.simulated import tree
from vgpu_nova_ext.host.simulated import vgpu_scheduler_state
from vgpu_nova_ext.host import sysfs_backend


class SimulatedBackend(sysfs_backend.SysfsBackend):
    """Host backend on a simulated host described by a profile.

    The host is a sysfs tree that the sysfs backend reads and writes
    unchanged; its :class:`~.kernel.SimulatedKernel` carries the writes
    out. Give ``root`` to share one simulated host between processes. A
    host owned by another user (root) is written through the privsep
    daemon, as a real host is, while its owner runs
    :func:`~.kernel_writes.watching`.
    """

    def __init__(self, profile: 'str | specs.Profile' = 'v100x8',
                 root: str | None = None, **kwargs) -> None:
        self.profile = (profile if isinstance(profile, specs.Profile)
                        else parse.load_profile(profile))
        self._own_root = root is None
        root = root or tempfile.mkdtemp(prefix='vgpu-nova-ext-sim-')
        try:
            if not os.path.isdir(os.path.join(root, 'sys')):
                os.makedirs(root, exist_ok=True)
                with kernel.SimulatedKernel.lock(root):
                    if not os.path.isdir(os.path.join(root, 'sys')):
                        tree.lay_out(self.profile, root)
                        kernel.SimulatedKernel.mark(self.profile, root)
        except BaseException:
            if self._own_root:
                shutil.rmtree(root, ignore_errors=True)
            raise
        kwargs.setdefault('privileged', os.stat(root).st_uid != os.geteuid())
        kwargs.setdefault('facts', SimulatedNvml(self.profile, root))
        if not kwargs['privileged'] and os.path.exists(
                os.path.join(root, kernel.JOURNAL)):
            # A writer was killed mid-change: finish it, as the kernel
            # would have (another's host: its owner's kernel does).
            with kernel.SimulatedKernel.lock(root):
                kernel.SimulatedKernel.at(root).recover()
        super().__init__(sysfs_root=root, **kwargs)
        if not kwargs['privileged']:
            # Its kernel carries the writes out, in this process; another's
            # host is written through the privsep daemon as a real one is.
            self.writer = kernel_writes.KernelWriter(
                kernel.SimulatedKernel.at(root))

    @property
    def root(self) -> str:
        return self.reader.root

    def reboot(self) -> None:
        """The host reboots: :meth:`.kernel.SimulatedKernel.reboot`."""
        kernel.SimulatedKernel.at(self.root).reboot()

    def describe(self) -> str:
        return 'simulated host %r (%s)' % (
            self.profile.name, self.profile.description)

    def close(self) -> None:
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)


class SimulatedNvml(nvml.FactsSource):
    """The NVML of a simulated host.

    Each vendor-VFIO GPU's mode, and each type's most per VM where the
    profile gives it; every NVIDIA GPU's vGPUs as its manager runs them
    (:mod:`.manager`). Names are left to sysfs and the ledger, so that a
    simulated GPU shows what a host without nvidia-ml-py shows.
    """

    def __init__(self, profile: specs.Profile, root: str) -> None:
        self._gpus = {g.address: g for g in profile.gpus if g.model.vfio}
        self._store = mig_state.MigStore(root)
        self._root = root

    def describe(self) -> str:
        return 'simulated NVML'

    def facts(self, gpu: model.PhysicalGPU) -> nvml.GpuFacts | None:
        vgpus = manager.manager_vgpus(self._root, gpu)
        if vgpus is None:
            return None     # not NVIDIA's: NVML knows nothing of it
        version, ecc = manager.host_facts(self._root, gpu.address)
        scheduler = vgpu_scheduler_state.read(self._root, gpu.address)
        spec = self._gpus.get(gpu.address)
        if spec is None:
            # What the host read of it stays as it is.
            return nvml.GpuFacts(
                mixed_size=gpu.mixed_size, mig=gpu.mig,
                gpu_instance_profiles=gpu.gpu_instance_profiles,
                manager_vgpus=vgpus, manager_version=version, ecc=ecc,
                vgpu_scheduler=scheduler)
        return nvml.GpuFacts(
            mixed_size=spec.mixed_size, max_per_vm=tuple(
                (t.id, t.max_per_vm) for t in spec.model.types
                if t.max_per_vm is not None),
            type_gi=tuple((t.id, t.gpu_instance_profile, t.max_per_gi)
                          for t in spec.model.types
                          if t.gpu_instance_profile is not None),
            mig=(self._store.state(gpu.address)
                 if spec.model.mig_profiles else None),
            gpu_instance_profiles=spec.model.mig_profiles,
            manager_vgpus=vgpus, manager_version=version, ecc=ecc,
            vgpu_scheduler=scheduler)
