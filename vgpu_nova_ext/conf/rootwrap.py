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
"""Nova's root helper, which starts every privsep daemon of nova-compute.

nova-compute initialises oslo.privsep with ``sudo nova-rootwrap
<[DEFAULT] rootwrap_config>`` (``sudo`` alone with ``[workarounds]
disable_rootwrap``), and every context without a ``helper_command`` of
its own, this project's included, starts as ``<that> privsep-helper
--config-file <nova-compute's files> ...``. oslo.rootwrap admits
``privsep-helper`` whatever its filters say. The command line starts its
daemons the same way, so that the one sudoers rule every deployment
installs for Nova is all either needs.
"""

from oslo_config import cfg

#: Nova's options (nova/conf/base.py, nova/conf/workarounds.py), read by the
#: command line from the same files; inside nova-compute Nova registers
#: them.
NOVA_OPTS = [
    cfg.StrOpt('rootwrap_config', default='/etc/nova/rootwrap.conf',
               help='Nova\'s rootwrap configuration (read, not set, by '
                    'vgpu-nova-ext).'),
]
NOVA_WORKAROUNDS_OPTS = [
    cfg.BoolOpt('disable_rootwrap', default=False,
                help='Nova\'s: sudo instead of nova-rootwrap (read, not '
                     'set, by vgpu-nova-ext).'),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(NOVA_OPTS)
    conf.register_opts(NOVA_WORKAROUNDS_OPTS, group='workarounds')


def root_helper(conf: cfg.ConfigOpts) -> list[str]:
    """As ``nova.utils.get_root_helper``, from Nova's options in ``conf``."""
    if conf.workarounds.disable_rootwrap:
        return ['sudo']
    return ['sudo', 'nova-rootwrap', conf.rootwrap_config]
