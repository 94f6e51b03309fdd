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
``[vgpu_nova_ext_privileged] helper_command``, by default as every privsep
daemon of nova-compute starts: ``sudo nova-rootwrap <rootwrap_config>
privsep-helper`` with the service's configuration files (Nova's root
helper, :mod:`vgpu_nova_ext.conf.rootwrap`; oslo.rootwrap admits
``privsep-helper`` whatever its filters say).

Capabilities: ``vgpu_pctxt`` keeps ``CAP_DAC_OVERRIDE`` only. The writes
need nothing but permission to write (and create mdevctl files in)
root-owned places, which is what it grants; no device control
(``CAP_SYS_ADMIN``), no ownership changes (``CAP_CHOWN``, ``CAP_FOWNER``),
no network. ``vgpu_mig_pctxt`` adds ``CAP_SYS_ADMIN`` for nvidia-smi and
sriov-manage, and starts only where one runs: on hosts that declare a MIG
layout, and where an SR-IOV GPU needs its VFs after a reboot.

Entry points take typed values (a device UUID, a PCI address, a type) and
never a path: the daemon writes under the ``[vgpu_nova_ext] sysfs_root``
and ``mdevctl_path`` of its own configuration, and
:mod:`vgpu_nova_ext.host.writes` checks each value and builds every path
itself. :class:`DaemonWriter` is nova-compute's side.
"""

import os
import types

from oslo_config import cfg
from oslo_privsep import capabilities as caps
from oslo_privsep import priv_context

from vgpu_nova_ext.host import opts as host_opts
from vgpu_nova_ext.host import writes

CFG_SECTION = 'vgpu_nova_ext_privileged'

vgpu_pctxt = priv_context.PrivContext(
    'vgpu_nova_ext',
    cfg_section=CFG_SECTION,
    pypath=__name__ + '.vgpu_pctxt',
    capabilities=[caps.CAP_DAC_OVERRIDE],
)


# -- In the daemon: the roots are its own --------------------------------
# The daemon reads nova-compute's configuration files itself (the helper's
# --config-file, those of the service that started it), or inherits the
# configuration it was forked with; its callers name devices, never paths.
def _configured() -> tuple[str, str | None]:
    """``[vgpu_nova_ext] sysfs_root`` and ``mdevctl_path``, as configured."""
    return host_opts.roots(cfg.CONF)


def _mdevctl_path() -> str:
    path = _configured()[1]
    if not path:
        raise writes.InvalidHostWrite(
            'no mdevctl definition is written: [vgpu_nova_ext] mdevctl_path '
            'is not set in the privileged daemon\'s configuration; nothing '
            'was written')
    return path


@vgpu_pctxt.entrypoint
def create_mdev(parent: str, type_id: str, device_uuid: str) -> None:
    writes.create_mdev(_configured()[0], parent, type_id, device_uuid)


@vgpu_pctxt.entrypoint
def remove_mdev(device_uuid: str) -> None:
    writes.remove_mdev(_configured()[0], device_uuid)


@vgpu_pctxt.entrypoint
def set_vf_vgpu_type(vf_address: str, type_number: int) -> None:
    writes.set_vf_vgpu_type(_configured()[0], vf_address, type_number)


@vgpu_pctxt.entrypoint
def set_vgpu_params(kind: str, device_id: str, content: str) -> None:
    writes.set_vgpu_params(_configured()[0], kind, device_id, content)


@vgpu_pctxt.entrypoint
def write_mdevctl(parent: str, device_uuid: str, type_id: str, *,
                  params: str = '') -> None:
    # params by name only: no root can be slipped in as a fourth argument.
    writes.write_mdevctl(_mdevctl_path(), parent, device_uuid, type_id,
                         params)


@vgpu_pctxt.entrypoint
def remove_mdevctl(parent: str, device_uuid: str) -> None:
    writes.remove_mdevctl(_mdevctl_path(), parent, device_uuid)


#: MIG steps and the bring-up's VFs run nvidia-smi and sriov-manage, which
#: need device control: a context of their own, started on first use.
MIG_CFG_SECTION = 'vgpu_nova_ext_mig_privileged'
vgpu_mig_pctxt = priv_context.PrivContext(
    'vgpu_nova_ext',
    cfg_section=MIG_CFG_SECTION,
    pypath=__name__ + '.vgpu_mig_pctxt',
    capabilities=[caps.CAP_SYS_ADMIN, caps.CAP_DAC_OVERRIDE],
)


@vgpu_mig_pctxt.entrypoint
def mig_command(gpu_address: str, command: str, argument: str = '') -> None:
    writes.mig_command(_configured()[0], gpu_address, command, argument)


# -- In nova-compute ------------------------------------------------------
class DaemonWriter:
    """The host writes of :mod:`~vgpu_nova_ext.host.writes`, by the daemon.

    The same calls as ``writes`` so that a backend need not know where its
    writes run; the roots they name must be the configured ones, which the
    daemon uses whatever it is told: a backend reading another tree (a
    command's ``--sysfs-root``) is told so instead of writing elsewhere.
    """

    @staticmethod
    def _same(what: str, given: str | None, configured: str | None) -> None:
        if given != configured and not (given and configured and (
                os.path.realpath(given) == os.path.realpath(configured))):
            raise writes.InvalidHostWrite(
                'the privileged daemon writes under [vgpu_nova_ext] %s = %s '
                'only, not %s; run as root to write another tree, or set '
                '%s; nothing was written' % (what, configured, given, what))

    def _root(self, sysfs_root: str) -> None:
        self._same('sysfs_root', sysfs_root, _configured()[0])

    def create_mdev(self, sysfs_root: str, parent: str, type_id: str,
                    device_uuid: str) -> None:
        self._root(sysfs_root)
        create_mdev(parent, type_id, device_uuid)

    def remove_mdev(self, sysfs_root: str, device_uuid: str) -> None:
        self._root(sysfs_root)
        remove_mdev(device_uuid)

    def set_vf_vgpu_type(self, sysfs_root: str, vf_address: str,
                         type_number: int) -> None:
        self._root(sysfs_root)
        set_vf_vgpu_type(vf_address, type_number)

    def mig_command(self, sysfs_root: str, gpu_address: str, command: str,
                    argument: str = '') -> None:
        self._root(sysfs_root)
        mig_command(gpu_address, command, argument)

    def set_vgpu_params(self, sysfs_root: str, kind: str, device_id: str,
                        content: str) -> None:
        self._root(sysfs_root)
        set_vgpu_params(kind, device_id, content)

    def write_mdevctl(self, mdevctl_path: str, parent: str,
                      device_uuid: str, type_id: str,
                      params: str = '') -> None:
        self._same('mdevctl_path', mdevctl_path, _configured()[1])
        write_mdevctl(parent, device_uuid, type_id, params=params)

    def remove_mdevctl(self, mdevctl_path: str, parent: str,
                       device_uuid: str) -> None:
        self._same('mdevctl_path', mdevctl_path, _configured()[1])
        remove_mdevctl(parent, device_uuid)


#: What prefixes privsep-helper for a context with no helper_command
#: (oslo.privsep's own default until :func:`use_root_helper`).
_root_helper = ['sudo']


def use_root_helper(root_helper: list[str]) -> None:
    """Start the daemons as nova-compute does (``conf.rootwrap``).

    oslo.privsep's own default, ``sudo privsep-helper``, needs a sudoers
    rule no deployment installs; a context's ``helper_command`` still
    wins.
    """
    global _root_helper
    _root_helper = list(root_helper)
    priv_context.init(root_helper=list(root_helper))


def helper_command(section: str) -> str:
    """How the daemon of ``section`` starts, for people to read."""
    return cfg.CONF[section].helper_command or '%s privsep-helper' % (
        ' '.join(_root_helper))


def writer(privileged: bool = True) -> 'DaemonWriter | types.ModuleType':
    """Where host writes go: the daemon or ``writes``, in place.

    In place when no privilege is needed (``privileged`` False: a
    simulated host this user owns) or already held (root); else through
    the daemon.
    """
    if privileged and os.geteuid() != 0:
        return DaemonWriter()
    return writes


def list_opts():
    """The privsep context's options, for oslo-config-generator."""
    group = cfg.OptGroup(
        CFG_SECTION, title='vgpu-nova-ext privsep daemon',
        help='The oslo.privsep daemon that makes vgpu-nova-ext\'s host '
             'writes (mdev create and remove, a VF\'s current_vgpu_type, '
             'mdevctl files) for an unprivileged nova-compute. '
             'Unset, ``helper_command`` is Nova\'s root helper, as for '
             'every privsep daemon of nova-compute (and of this package\'s '
             'commands): ``sudo nova-rootwrap <[DEFAULT] rootwrap_config> '
             'privsep-helper --config-file <the service\'s files> ...``, '
             'which the sudoers rule every deployment installs for Nova '
             'allows.')
    mig_group = cfg.OptGroup(
        MIG_CFG_SECTION, title='vgpu-nova-ext MIG privsep daemon',
        help='The oslo.privsep daemon that runs nvidia-smi and sriov-manage '
             'to carve a GPU\'s declared MIG layout ([mdev_<type>] '
             'mig_gpu_instances), with CAP_SYS_ADMIN. Started only on hosts '
             'that declare one.')
    return [(group, priv_context.OPTS), (mig_group, priv_context.OPTS)]
