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
"""The DynamicJSON vendordata service: licensing for vGPU instances.

Nova POSTs ``{"project-id", "instance-id", "image-id", "user-data",
"hostname", "metadata", "boot-roles"}`` and files the answer under the
target's name in ``vendor_data2.json``. cloud-init reads only the key
``cloud-init`` there, and only a string or a list, so the target must be
named ``cloud-init`` and the answer is the cloud-config as a bare JSON
string (an object would arrive nested and be dropped).

The service asks Placement for the instance's allocations and answers only
when they hold a vGPU resource class; otherwise, and for every bad
request, the answer holds no token.

The WSGI application always asks for a Keystone token (keystonemiddleware,
``[keystone_authtoken]``) and for a caller the policy allows (see
:mod:`vgpu_nova_ext.licensing.policy`): behind a proxy every client may
come from 127.0.0.1, so the peer address decides nothing. Only the
development server, on loopback and told so on its command line, serves
without.
"""

import json
import os
import uuid

import os_resource_classes as orc
from oslo_log import log as logging

from vgpu_nova_ext import conf as conf_pkg
from vgpu_nova_ext.conf import devices as devices_conf
from vgpu_nova_ext.conf import logs
from vgpu_nova_ext import exception
from vgpu_nova_ext import inventory
from vgpu_nova_ext.licensing import policy as vendordata_policy
from vgpu_nova_ext.licensing import render as licensing_render
from vgpu_nova_ext.licensing import settings as licensing
from vgpu_nova_ext.placement import client as placement
from vgpu_nova_ext.vendors import types as vendor_types

LOG = logging.getLogger(__name__)
JSON = [('Content-Type', 'application/json')]


class VendordataApp:
    """The WSGI application."""

    def __init__(self, settings: vendor_types.LicensingSettings,
                 client: placement.PlacementClient,
                 type_ids: list[str], vgpu_classes: set[str],
                 max_body_bytes: int = 262144) -> None:
        self.settings = settings
        self.client = client
        self.vgpu_classes = set(vgpu_classes) | {orc.VGPU}
        self.by_trait = {inventory.id_trait(t): t for t in type_ids}
        self.max_body_bytes = max_body_bytes

    def __call__(self, environ, start_response):
        try:
            status, body = self.handle(environ)
        except Exception:
            # Never a traceback to the client; the log has it, and no
            # secret is in it (the token is a Secret, shown as fingerprint).
            LOG.exception('vendordata request failed')
            status, body = self._error('500 Internal Server Error',
                                       'the vendordata service failed; see '
                                       'its log')
        return respond(start_response, status, body)

    @staticmethod
    def _error(status: str, message: str):
        return status, {'error': message}

    def handle(self, environ):
        if environ.get('REQUEST_METHOD') != 'POST':
            return self._error('405 Method Not Allowed',
                               'POST the instance as Nova does')
        try:
            length = int(environ.get('CONTENT_LENGTH') or 0)
        except ValueError:
            length = -1
        if length < 0 or length > self.max_body_bytes:
            return self._error('413 Request Entity Too Large',
                               'the body must be at most %d bytes' %
                               self.max_body_bytes)
        raw = environ['wsgi.input'].read(length)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return self._error('400 Bad Request', 'the body is not JSON '
                               'as Nova sends it')
        instance = body.get('instance-id') if isinstance(body, dict) \
            else None
        try:
            instance = str(uuid.UUID(str(instance)))
        except ValueError:
            return self._error('400 Bad Request',
                               'instance-id is missing or not a UUID')
        if not self.settings.enabled:
            return '200 OK', {}
        try:
            type_id = self.vgpu_type(instance)
        except placement.PlacementError as exc:
            LOG.error('instance %s: cannot read its allocations: %s',
                      instance, exc)
            return self._error('503 Service Unavailable',
                               'Placement is unavailable')
        if type_id is False:
            LOG.debug('instance %s holds no vGPU: nothing to add', instance)
            return '200 OK', {}
        LOG.info('instance %s holds a vGPU (%s): licensing configuration '
                 'given (token %s)', instance, type_id or 'type unknown',
                 self.settings.token.fingerprint if self.settings.token
                 else 'none')
        return '200 OK', licensing_render.cloud_config(
            self.settings, type_id, metadata=body.get('metadata'),
            instance=instance)

    def vgpu_type(self, instance: str):
        """The vGPU type the instance holds.

        None if it holds one of unknown type; False if it holds none.
        """
        found = self.client.allocations(instance).get('allocations', {})
        providers = [rp for rp, body in found.items()
                     if self.vgpu_classes & set(body.get('resources', {}))]
        if not providers:
            return False
        for rp in providers:
            for trait in self.client.traits(rp)['traits']:
                if trait in self.by_trait:
                    return self.by_trait[trait]
        return None


def respond(start_response, status: str, body) -> list[bytes]:
    payload = json.dumps(body).encode()
    start_response(status, JSON + [('Content-Length', str(len(payload)))])
    return [payload]


class PolicyGate:
    """Who may ask: a confirmed Keystone identity the policy allows.

    401 without the identity, 403 without the policy's consent.
    """

    def __init__(self, app, enforcer) -> None:
        self.app = app
        self.enforcer = enforcer

    def __call__(self, environ, start_response):
        if environ.get('HTTP_X_IDENTITY_STATUS') != 'Confirmed':
            return respond(start_response, '401 Unauthorized', {
                'error': 'a valid Keystone token is required'})
        if not vendordata_policy.authorized(self.enforcer, environ):
            LOG.warning('vendordata refused to user %s of project %s: '
                        'policy %s does not allow it',
                        environ.get('HTTP_X_USER_ID'),
                        environ.get('HTTP_X_PROJECT_ID'),
                        vendordata_policy.VENDORDATA_SHOW)
            return respond(start_response, '403 Forbidden', {
                'error': 'policy %s does not allow this caller; Nova calls '
                         'with its [vendordata_dynamic_auth] user, which '
                         'needs the service role'
                         % vendordata_policy.VENDORDATA_SHOW})
        return self.app(environ, start_response)


def protect(app, conf):
    """``app`` behind keystonemiddleware and the policy.

    keystonemiddleware reads ``[keystone_authtoken]`` from ``conf`` (the
    parsed nova.conf), as nova-api does.
    """
    from keystonemiddleware import auth_token

    protected = auth_token.AuthProtocol(
        PolicyGate(app, vendordata_policy.enforcer(conf)), {
            'oslo_config_config': conf, 'delay_auth_decision': True})
    if conf.keystone_authtoken.auth_type is None:
        # Without credentials of its own keystonemiddleware validates no
        # token, and every guest would boot unlicensed: say so at start.
        raise exception.ConfigError(
            '[keystone_authtoken] auth_type is not set: the vendordata '
            'service validates tokens with credentials of its own, as '
            'nova-api does; give it nova-api\'s [keystone_authtoken] '
            '(auth_type = password, auth_url, username, ...) or, for '
            'development on 127.0.0.1 only, run vgpu-nova-ext-vendordata '
            '--noauth')
    return protected


def build(config_files, config_dirs=(), authenticate: bool = True):
    """The application from these configuration sources (nova.conf).

    :param authenticate: False only for the development server on
        loopback, told so on its command line.
    :raises VGPUNovaExtError: the configuration is wrong (named).
    """
    shared = conf_pkg.load(config_files, config_dirs)
    conf = conf_pkg.CONF
    device_config = devices_conf.read(shared)
    settings = licensing.load(conf, device_config)
    # One read per guest, within the service's deadline: Nova's metadata
    # API stops waiting after vendordata_dynamic_read_timeout.
    app = VendordataApp(
        settings, placement.PlacementClient.from_conf(
            shared, retries=0,
            timeout=conf.vgpu_vendordata.placement_timeout),
        list(device_config.type_ids),
        {t.mdev_class for t in device_config.types},
        max_body_bytes=conf.vgpu_vendordata.max_body_bytes)
    return protect(app, conf) if authenticate else app


def init_application():
    """The application for WSGI servers (uwsgi, mod_wsgi).

    Configuration: the files in ``VGPU_NOVA_EXT_CONFIG_FILES``
    (comma-separated; else /etc/nova/nova.conf), then the ``*.conf`` files
    of the directories in ``VGPU_NOVA_EXT_CONFIG_DIRS`` (comma-separated).
    Always behind keystonemiddleware and the policy.
    """
    files = os.environ.get('VGPU_NOVA_EXT_CONFIG_FILES',
                           ','.join(conf_pkg.DEFAULT_CONFIG_FILES))
    dirs = os.environ.get('VGPU_NOVA_EXT_CONFIG_DIRS', '')
    # The files' [DEFAULT] logging options apply once they are parsed.
    logs.set_up(conf_pkg.CONF, 'vgpu-nova-ext-vendordata')
    return build([f for f in files.split(',') if f],
                 [d for d in dirs.split(',') if d])
