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
"""The ``[vgpu_nova_ext]`` options that say where the host is.

Defined here, below ``conf``, because the privileged daemon reads them
itself (:mod:`vgpu_nova_ext.host.privsep`): the roots it writes under come
from its own configuration, never from its caller. ``conf.extension``
lists them with the group's other options.
"""

from oslo_config import cfg

GROUP = 'vgpu_nova_ext'

SYSFS_ROOT = cfg.StrOpt(
    'sysfs_root',
    default='/',
    help='The directory under which ``sys/`` is read by the ``sysfs`` '
         'backend. ``/`` on a real host; a copy of a host\'s tree for '
         'a dry run or a test. The command line\'s ``--sysfs-root`` '
         'overrides it. The privileged daemon writes under the value of '
         'its own configuration file, whatever nova-compute asks.')

MDEVCTL_PATH = cfg.StrOpt(
    'mdevctl_path',
    default=None,
    help='If set (usually ``/etc/mdevctl.d``), write an mdevctl '
         'definition for every device this project creates and remove '
         'it with the device, so that the kernel side is persisted for '
         'operators who use mdevctl. Unset: no definitions are written '
         '(the ledger re-creates devices after a reboot). The privileged '
         'daemon writes in the directory of its own configuration file.')


def roots(conf: cfg.ConfigOpts) -> tuple[str, str | None]:
    """``sysfs_root`` and ``mdevctl_path`` in ``conf``, registered if not.

    Registered once (the privileged daemon's own CONF has no other reason
    to know them); a registration clears oslo.config's cache, so it is not
    repeated at every write.
    """
    try:
        group = conf[GROUP]
        return group.sysfs_root, group.mdevctl_path
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
        conf.register_opts([SYSFS_ROOT, MDEVCTL_PATH], group=GROUP)
        group = conf[GROUP]
        return group.sysfs_root, group.mdevctl_path
