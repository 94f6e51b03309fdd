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
"""The project's own options, ``[vgpu_nova_ext]``, on the global CONF."""

from oslo_config import cfg

from vgpu_nova_ext.conf import loader
from vgpu_nova_ext.host import opts as host_opts

GROUP = host_opts.GROUP

extension_group = cfg.OptGroup(
    name=GROUP,
    title='vgpu-nova-ext',
    help='How vgpu-nova-ext reaches the host\'s devices.')

extension_opts = [
    cfg.StrOpt(
        'host_backend',
        default='libvirt',
        help='The host backend plugin (stevedore namespace '
             '``vgpu_nova_ext.host_backends``) that reads and changes the '
             'host\'s devices. ``libvirt`` (default): libvirt\'s node-device '
             'API (define, start, autostart; devices persist through '
             'mdevctl), the host read from sysfs. ``sysfs``: the kernel\'s '
             'mdev bus under ``sysfs_root`` directly (devices do not survive '
             'a reboot by themselves; reconcile makes them again). ``vfio``: '
             'NVIDIA\'s vendor-specific VFIO (vGPU 17+, no mdev bus). '
             '``simulated``: a host described by ``simulated_profile``, for '
             'demos and tests only.'),
    host_opts.SYSFS_ROOT,
    cfg.StrOpt(
        'simulated_profile',
        default='v100x8',
        help='The simulated host of the ``simulated`` backend: a built-in '
             'profile name (``v100x8``, ``p40``, ``m60``, ``a100-sriov``, '
             '``mtty``) or the path of a YAML profile. The command line\'s '
             '``--simulate`` overrides it. Ignored by other backends.'),
    cfg.StrOpt(
        'state_path',
        sample_default='<[DEFAULT] state_path>/vgpu-nova-ext',
        help='Directory of the device ledger (which device belongs to '
             'which instance) and of the lock that serialises device '
             'changes on this host. Must survive reboots, upgrades and the '
             're-creation of a container, and be writable by nova-compute '
             'only; it is created with mode 0700. Unset: '
             '``vgpu-nova-ext`` under Nova\'s ``[DEFAULT] state_path`` '
             '(kolla-ansible\'s and openstack-ansible\'s '
             '``/var/lib/nova``), or ``/var/lib/vgpu-nova-ext`` where that '
             'directory already exists (the old default; a warning says '
             'how to move it) or Nova\'s state_path is not set. The '
             'command line\'s ``--state-path`` overrides it.'),
    cfg.StrOpt(
        'free_device_policy',
        default='remove',
        choices=[('remove', 'remove a freed device from the host (and '
                            'undefine it, so it does not come back at boot)'),
                 ('keep', 'keep a freed device and reuse it for the next '
                          'instance of its type on that GPU')],
        help='What happens to an instance\'s vGPU devices when it is '
             'deleted, shelved or moved away.'),
    cfg.IntOpt(
        'orphan_grace_period',
        default=600,
        min=0,
        help='Seconds a device may belong to an instance that no longer '
             'exists on this host before reconcile frees it. Leaves time '
             'for an instance being moved or rebuilt to claim it again.'),
    cfg.BoolOpt(
        'bring_up_at_start',
        default=True,
        help='At nova-compute\'s start, enable the virtual functions of '
             'the SR-IOV GPUs this host serves that have none (after a '
             'host reboot), with sriov-manage -e through the MIG privsep '
             'context, retried with a bounded back-off; then the MIG '
             'layouts are carved and the ledger\'s devices made again. A '
             'GPU that cannot be brought back is logged and serves nothing; '
             'the others go on. False: leave the VFs to a unit of your own '
             '(vgpu-nova-ext bring-up does the same from a systemd unit).'),
    cfg.IntOpt(
        'full_reconcile_interval',
        default=300,
        min=0,
        help='Seconds between two full reconciles of the periodic task. In '
             'between, a periodic task in which nothing changed (the '
             'host\'s mediated devices and virtual functions, the ledger, '
             'the domains libvirt lists, each read cheaply) skips the '
             'reconcile and reuses the last plan of the host; a change, '
             'or a device waiting out orphan_grace_period, makes the next '
             'task a full one. A change the cheap reads do not see (a '
             'vendor-VFIO type set by hand, MIG instances carved by hand) '
             'is found by the next full reconcile. 0: every periodic task '
             'is a full one.'),
    cfg.FloatOpt(
        'device_timeout',
        default=10.0,
        min=0.1,
        help='Seconds to wait for the kernel to make a device appear after '
             'a create, or vanish after a remove, before giving up with an '
             'error.'),
    host_opts.MDEVCTL_PATH,
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    loader.register_group(conf, extension_group)
    conf.register_opts(extension_opts, group=extension_group)


def list_opts() -> list[tuple[cfg.OptGroup, list[cfg.Opt]]]:
    return [(extension_group, extension_opts)]
