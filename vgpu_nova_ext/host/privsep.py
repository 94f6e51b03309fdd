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
"""Privilege separation: the host writes, in oslo.privsep's daemon.

nova-compute runs as an unprivileged user; creating and removing vGPU
devices writes root-owned sysfs attributes (``create`` and ``remove``
0200, a VF's ``nvidia/current_vgpu_type`` 0644) and mdevctl's files. As
Nova (``nova.privsep``) and os-vif do, those writes run in a privsep
daemon of this project's own context, started on first use through the
``[vgpu_nova_ext_privileged] helper_command`` (default: ``sudo
privsep-helper`` with the service's configuration files).

Capabilities kept: ``CAP_DAC_OVERRIDE`` only. The writes need nothing but
permission to write (and create mdevctl files in) root-owned places,
which is what it grants; no device control (``CAP_SYS_ADMIN``), no
ownership changes (``CAP_CHOWN``, ``CAP_FOWNER``), no network.

Entry points take typed values and hand them to
:mod:`vgpu_nova_ext.host.writes`, which checks them and builds every path
itself: there is no "write this path" call.
"""

import os
import sys
import types

from oslo_config import cfg
from oslo_privsep import capabilities as caps
from oslo_privsep import priv_context

from vgpu_nova_ext.host import writes

CFG_SECTION = 'vgpu_nova_ext_privileged'

vgpu_pctxt = priv_context.PrivContext(
    'vgpu_nova_ext',
    cfg_section=CFG_SECTION,
    pypath=__name__ + '.vgpu_pctxt',
    capabilities=[caps.CAP_DAC_OVERRIDE],
)


@vgpu_pctxt.entrypoint
def create_mdev(sysfs_root: str, parent: str, type_id: str,
                device_uuid: str) -> None:
    writes.create_mdev(sysfs_root, parent, type_id, device_uuid)


@vgpu_pctxt.entrypoint
def remove_mdev(sysfs_root: str, device_uuid: str) -> None:
    writes.remove_mdev(sysfs_root, device_uuid)


@vgpu_pctxt.entrypoint
def set_vf_vgpu_type(sysfs_root: str, vf_address: str,
                     type_number: int) -> None:
    writes.set_vf_vgpu_type(sysfs_root, vf_address, type_number)


#: MIG steps run nvidia-smi and sriov-manage, which need device control:
#: a context of their own, used only on hosts that declare a MIG layout.
MIG_CFG_SECTION = 'vgpu_nova_ext_mig_privileged'
vgpu_mig_pctxt = priv_context.PrivContext(
    'vgpu_nova_ext',
    cfg_section=MIG_CFG_SECTION,
    pypath=__name__ + '.vgpu_mig_pctxt',
    capabilities=[caps.CAP_SYS_ADMIN, caps.CAP_DAC_OVERRIDE],
)


@vgpu_mig_pctxt.entrypoint
def mig_command(sysfs_root: str, gpu_address: str, command: str,
                argument: str = '') -> None:
    writes.mig_command(sysfs_root, gpu_address, command, argument)


@vgpu_pctxt.entrypoint
def write_mdevctl(mdevctl_path: str, parent: str, device_uuid: str,
                  type_id: str) -> None:
    writes.write_mdevctl(mdevctl_path, parent, device_uuid, type_id)


@vgpu_pctxt.entrypoint
def remove_mdevctl(mdevctl_path: str, parent: str,
                   device_uuid: str) -> None:
    writes.remove_mdevctl(mdevctl_path, parent, device_uuid)


def writer(privileged: bool = True) -> types.ModuleType:
    """Where host writes go: this module (the daemon) or ``writes``.

    In place when no privilege is needed (``privileged`` False: a
    simulated host this user owns) or already held (root); else through
    the daemon.
    """
    if privileged and os.geteuid() != 0:
        return sys.modules[__name__]
    return writes


def list_opts():
    """The privsep context's options, for oslo-config-generator."""
    group = cfg.OptGroup(
        CFG_SECTION, title='vgpu-nova-ext privsep daemon',
        help='The oslo.privsep daemon that makes vgpu-nova-ext\'s host '
             'writes (mdev create and remove, a VF\'s current_vgpu_type, '
             'mdevctl files) for an unprivileged nova-compute. '
             '``helper_command`` says how it starts: with Nova\'s rootwrap, '
             '``sudo nova-rootwrap /etc/nova/rootwrap.conf privsep-helper '
             '--config-file /etc/nova/nova.conf`` and the rootwrap filter '
             'this package ships (etc/nova/rootwrap.d).')
    mig_group = cfg.OptGroup(
        MIG_CFG_SECTION, title='vgpu-nova-ext MIG privsep daemon',
        help='The oslo.privsep daemon that runs nvidia-smi and sriov-manage '
             'to carve a GPU\'s declared MIG layout ([mdev_<type>] '
             'mig_gpu_instances), with CAP_SYS_ADMIN. Started only on hosts '
             'that declare one.')
    return [(group, priv_context.OPTS), (mig_group, priv_context.OPTS)]
