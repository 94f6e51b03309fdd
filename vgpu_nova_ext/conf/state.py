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
"""Where the device ledgers live when ``[vgpu_nova_ext] state_path`` is unset.

Under Nova's own ``[DEFAULT] state_path`` (``<it>/vgpu-nova-ext``), which
every deployment keeps across upgrades and container re-creation (kolla's
``nova_compute`` volume is ``/var/lib/nova``). An existing directory at the
old default, ``/var/lib/vgpu-nova-ext``, is kept, with a warning saying how
to move it: a ledger is never left behind. Where Nova's ``state_path`` is
not set either (Nova's own default is its package's directory), the old
default stays.
"""

import os

from oslo_config import cfg
from oslo_log import log as logging

LOG = logging.getLogger(__name__)

#: The old default: kept where it exists.
LEGACY = '/var/lib/vgpu-nova-ext'
#: The directory under Nova's [DEFAULT] state_path.
SUBDIR = 'vgpu-nova-ext'

#: Nova's option, registered on the command line's own ConfigOpts (inside
#: nova-compute, Nova registers it).
NOVA_STATE_PATH = cfg.StrOpt(
    'state_path',
    help='Nova\'s top-level directory for its state (read, not set, by '
         'vgpu-nova-ext): the ledgers default to <state_path>/vgpu-nova-ext.')

_warned: set[str] = set()


def nova_state_path(conf: cfg.ConfigOpts) -> str | None:
    """Nova's ``[DEFAULT] state_path`` where the configuration sets it."""
    try:
        location = conf.get_location('state_path')
        value = conf.state_path
    except (cfg.NoSuchOptError, AttributeError):
        return None
    if not value or location is None or \
            location.location == cfg.Locations.opt_default:
        return None
    return value


def root(conf: cfg.ConfigOpts, nova_conf: cfg.ConfigOpts) -> str:
    """The directory that holds ``<host>/``, the ledger of each node.

    :param conf: this project's options (``[vgpu_nova_ext]``).
    :param nova_conf: the options holding Nova's ``[DEFAULT] state_path``
        (nova-compute's own CONF; the command line's shared options).
    """
    explicit = conf.vgpu_nova_ext.state_path
    if explicit:
        return explicit
    nova = nova_state_path(nova_conf)
    if nova is None:
        return LEGACY
    wanted = os.path.join(nova, SUBDIR)
    if os.path.isdir(LEGACY) and not os.path.isdir(wanted):
        if LEGACY not in _warned:
            _warned.add(LEGACY)
            LOG.warning(
                'The device ledgers are in %(old)s, the old default; the '
                'default is now %(new)s, under '
                'Nova\'s [DEFAULT] state_path, which deployments keep '
                '(kolla-ansible keeps only its volumes). Going on with '
                '%(old)s. To move: stop nova-compute, mv %(old)s %(new)s, '
                'start it; or keep it: [vgpu_nova_ext] state_path = '
                '%(old)s.', {'old': LEGACY, 'new': wanted})
        return LEGACY
    return wanted
