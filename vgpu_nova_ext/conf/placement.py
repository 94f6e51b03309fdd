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
"""``[placement]``: how to reach Placement, as nova.conf already says.

Nova registers keystoneauth's options in ``[placement]`` on its global
``CONF``; as for ``[devices]``, they are read here into a private
``cfg.ConfigOpts`` from the same files, so the two never collide.
``auth_type = password`` (with ``auth_url``, ``username`` ...) reaches
Placement through Keystone as nova-compute does; ``auth_type =
admin_token`` with ``endpoint`` and ``token`` reaches a Placement running
``[api] auth_strategy = noauth2`` (the demo, the tests).
"""

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import loading as ks_loading
from keystoneauth1 import session as ks_session
from oslo_config import cfg

from vgpu_nova_ext import exception

GROUP = 'placement'

placement_group = cfg.OptGroup(
    name=GROUP, title='Placement service (shared with Nova)',
    help='Read by the commands that talk to Placement outside '
         'nova-compute (audit, demo, the vendordata service), with the '
         'meanings nova-compute gives them.')


def _register(conf: cfg.ConfigOpts) -> None:
    conf.register_group(placement_group)
    ks_loading.register_session_conf_options(conf, GROUP)
    ks_loading.register_auth_conf_options(conf, GROUP)
    ks_loading.register_adapter_conf_options(conf, GROUP)


def load_session(config_files: list[str]) -> ks_session.Session:
    """A keystoneauth session from ``[placement]`` of these files.

    :raises ConfigError: naming the option to fix; never the secret.
    """
    conf = cfg.ConfigOpts()
    _register(conf)
    try:
        conf(args=[], project='nova', default_config_files=config_files,
             use_env=False)
        auth = ks_loading.load_auth_from_conf_options(conf, GROUP)
    except cfg.Error as exc:
        raise exception.ConfigError(
            'cannot read [placement] from %s: %s' % (
                ', '.join(config_files) or 'no file', exc))
    except ks_exc.MissingRequiredOptions as exc:
        raise exception.ConfigError(
            '[placement] is missing %s for auth_type %s; set them as '
            'nova-compute has them' % (', '.join(
                o.dest for o in exc.options), conf.placement.auth_type))
    except ks_exc.NoMatchingPlugin as exc:
        raise exception.ConfigError(
            '[placement] auth_type = %s is not a keystoneauth plugin; use '
            'password (Keystone) or admin_token (a noauth2 Placement)'
            % exc.name)
    if auth is None:
        raise exception.ConfigError(
            '[placement] has no auth_type: set it as in nova-compute\'s '
            'nova.conf (auth_type = password, auth_url, username, ...)')
    return ks_loading.load_session_from_conf_options(conf, GROUP, auth=auth)


def list_opts():
    return [(placement_group,
             ks_loading.get_session_conf_options()
             + ks_loading.get_auth_common_conf_options()
             + ks_loading.get_auth_plugin_conf_options('password')
             + ks_loading.get_auth_plugin_conf_options('admin_token')
             + ks_loading.get_adapter_conf_options())]
