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
``CONF``; as for ``[devices]``, they are registered here only where Nova
has not, and read from the parsed ``CONF`` (see
:func:`vgpu_nova_ext.conf.load`).
``auth_type = password`` (with ``auth_url``, ``username`` ...) reaches
Placement through Keystone as nova-compute does; ``auth_type =
admin_token`` with ``endpoint`` and ``token`` reaches a Placement running
``[api] auth_strategy = noauth2`` (the demo, the tests).
"""

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import loading as ks_loading
from keystoneauth1 import session as ks_session
from oslo_config import cfg

from vgpu_nova_ext.conf import loader
from vgpu_nova_ext import exception

GROUP = 'placement'

placement_group = cfg.OptGroup(
    name=GROUP, title='Placement service (shared with Nova)',
    help='Read by the commands that talk to Placement outside '
         'nova-compute (audit, demo, the vendordata service), with the '
         'meanings nova-compute gives them.')


#: Seconds a request to Placement may take when ``[placement] timeout`` is
#: unset (keystoneauth's default is to wait for ever): a Placement that
#: accepts and never answers must not hang the vendordata service or audit.
DEFAULT_TIMEOUT = 30.0


def register_opts(conf: cfg.ConfigOpts) -> None:
    loader.register_group(conf, placement_group)
    loader.register_tolerant(
        conf, ks_loading.get_session_conf_options()
        + ks_loading.get_auth_common_conf_options()
        + ks_loading.get_adapter_conf_options(), group=GROUP)


def load_session(conf: cfg.ConfigOpts, timeout: float | None = None
                 ) -> ks_session.Session:
    """A keystoneauth session from ``[placement]`` of a parsed ``conf``.

    Every request has a time limit: ``timeout`` when given (a service with
    a deadline of its own), else ``[placement] timeout``, else
    :data:`DEFAULT_TIMEOUT`.

    :raises ConfigError: naming the option to fix; never the secret.
    """
    register_opts(conf)
    try:
        auth = ks_loading.load_auth_from_conf_options(conf, GROUP)
    except (cfg.Error, ValueError) as exc:
        raise exception.ConfigError(
            'cannot read [placement]: %s; fix the option it names' % exc)
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
    try:
        timeout = timeout or conf[GROUP].timeout
        if timeout is not None and timeout <= 0:
            raise exception.ConfigError(
                '[placement] timeout = %s: it must be a positive number of '
                'seconds (unset: %d)' % (timeout, DEFAULT_TIMEOUT))
        return ks_loading.load_session_from_conf_options(
            conf, GROUP, auth=auth, timeout=timeout or DEFAULT_TIMEOUT)
    except ValueError as exc:
        raise exception.ConfigError(
            'invalid [placement] option: %s; fix it in the configuration '
            'file' % exc)


def list_opts():
    return [(placement_group,
             ks_loading.get_session_conf_options()
             + ks_loading.get_auth_common_conf_options()
             + ks_loading.get_auth_plugin_conf_options('password')
             + ks_loading.get_auth_plugin_conf_options('admin_token')
             + ks_loading.get_adapter_conf_options())]
