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

GROUP = 'vgpu_nova_ext'

extension_group = cfg.OptGroup(
    name=GROUP,
    title='vgpu-nova-ext',
    help='How vgpu-nova-ext reaches the host\'s devices.')

extension_opts = [
    cfg.StrOpt(
        'host_backend',
        default='sysfs',
        help='The host backend plugin (stevedore namespace '
             '``vgpu_nova_ext.host_backends``) that reads and changes the '
             'host\'s devices. ``sysfs``: the kernel\'s mdev bus under '
             '``sysfs_root``. ``simulated``: a host described by '
             '``simulated_profile``, for demos and tests only.'),
    cfg.StrOpt(
        'sysfs_root',
        default='/',
        help='The directory under which ``sys/`` is read by the ``sysfs`` '
             'backend. ``/`` on a real host; a copy of a host\'s tree for '
             'a dry run or a test. The command line\'s ``--sysfs-root`` '
             'overrides it.'),
    cfg.StrOpt(
        'simulated_profile',
        default='v100x8',
        help='The simulated host of the ``simulated`` backend: a built-in '
             'profile name (``v100x8``, ``p40``, ``m60``, ``a100-sriov``, '
             '``mtty``) or the path of a YAML profile. The command line\'s '
             '``--simulate`` overrides it. Ignored by other backends.'),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(extension_group)
    conf.register_opts(extension_opts, group=extension_group)


def list_opts() -> list[tuple[cfg.OptGroup, list[cfg.Opt]]]:
    return [(extension_group, extension_opts)]
