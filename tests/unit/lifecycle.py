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
"""A simulated host, its plan, ledger and allocator, for lifecycle tests."""

import os
import textwrap

from tests import configs
from vgpu_nova_ext.devices import allocator
from vgpu_nova_ext.devices import factory
from vgpu_nova_ext.host import simulated
from vgpu_nova_ext import mapping

HOST = 'cn1'
# Eight time-sliced GPUs of 8 vGPUs each (64 in all), no devices yet.
EIGHT_BY_EIGHT = textwrap.dedent("""
    description: 8 GPUs x 8 vGPUs
    models:
      board:
        sharing: time-sliced
        framebuffer_mb: 8192
        types:
          - [nvidia-15, GRID M60-1Q, 1024, 4, 60, 5120x2880]
          - [nvidia-18, GRID M60-2Q, 2048, 4, 60, 5120x2880]
    gpus:
""") + ''.join('  - {address: "0000:%02x:00.0", model: board}\n' % (0x81 + i)
               for i in range(8)) + textwrap.dedent("""
    example_config: |
      [devices]
      enabled_mdev_types = nvidia-15
""")


def profile_file(directory: str, text: str = EIGHT_BY_EIGHT) -> str:
    path = os.path.join(directory, 'host.yaml')
    with open(path, 'w') as f:
        f.write(text)
    return path


def build(directory: str, profile: str, config: str | None = None,
          free_policy: str = allocator.REMOVE, backend_class=None,
          orphan_grace: int | None = None,
          mdevctl_path: str | None = None) -> allocator.Allocator:
    """An allocator on the simulated host kept in ``directory``.

    Every call with the same directory sees the same host and ledger, from
    any process. Assembled by the factory the driver and the CLI use.
    """
    prof = simulated.load_profile(profile)
    backend = (backend_class or simulated.SimulatedBackend)(
        prof, root=os.path.join(directory, 'host'))
    conf = os.path.join(directory, 'nova.conf')
    if config is not None or not os.path.exists(conf):
        with open(conf, 'w') as f:
            f.write(config if config is not None else prof.example_config)
    plan = mapping.assign(configs.device_config([conf]),
                          backend.scan())
    overrides = {'state_path': os.path.join(directory, 'state'),
                 'free_device_policy': free_policy,
                 'mdevctl_path': mdevctl_path}
    if orphan_grace is not None:
        overrides['orphan_grace_period'] = orphan_grace
    return factory.open_host(
        configs.own_conf(**overrides), HOST, backend=backend,
        targets=allocator.targets(HOST, plan)).allocator


def alloc(al: allocator.Allocator, *gpus: str, rc: str = 'VGPU') -> dict:
    """Allocations as Nova hands them, one vGPU on each GPU named."""
    by_gpu = {t.gpu: t.provider_uuid for t in al.targets.values()}
    out: dict = {}
    for gpu in gpus:
        res = out.setdefault(by_gpu[gpu], {'resources': {}})['resources']
        res[rc] = res.get(rc, 0) + 1
    return out


def targets_of(al: allocator.Allocator,
               device_config) -> dict[str, allocator.Target]:
    """The allocator's targets planned again (after GPUs were carved)."""
    return allocator.targets(HOST, mapping.assign(device_config, al.scan()))


def start(al: allocator.Allocator, directory: str) -> tuple:
    """What nova-compute's start does after a reboot, in its order.

    The bring-up, the MIG layouts, the plan (the allocator's targets),
    then the reconcile that makes the ledger's devices again.
    :returns: (bring-up's steps and what it left, the reconcile's actions).
    """
    config = configs.device_config([os.path.join(directory, 'nova.conf')])
    steps, left = al.bring_up(config)
    al.carve_mig_layouts(config)
    al.targets = targets_of(al, config)
    return steps, left, al.reconcile()
