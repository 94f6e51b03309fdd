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
"""

import ipaddress
import json
import logging
import os
import uuid

from vgpu_nova_ext import inventory
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
        self.vgpu_classes = set(vgpu_classes) | {'VGPU'}
        self.by_trait = {inventory.id_trait(t): t for t in type_ids}
        self.max_body_bytes = max_body_bytes

    def __call__(self, environ, start_response):
        status, body = self.handle(environ)
        payload = json.dumps(body).encode()
        start_response(status,
                       JSON + [('Content-Length', str(len(payload)))])
        return [payload]

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
        except (ValueError, UnicodeDecodeError):
            return self._error('400 Bad Request', 'the body is not JSON')
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
        return '200 OK', licensing_render.cloud_config(self.settings, type_id)

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


def needs_auth(listen: str) -> bool:
    """Anything but loopback needs a Keystone token."""
    try:
        return not ipaddress.ip_address(listen).is_loopback
    except ValueError:
        return listen != 'localhost'


def require_keystone(app, conf=None):
    """Wrap ``app`` with keystonemiddleware: no valid token, no answer.

    keystonemiddleware reads ``[keystone_authtoken]`` from ``conf`` (the
    loaded CONF), as nova-api does.
    """
    from keystonemiddleware import auth_token

    from vgpu_nova_ext import conf as conf_pkg

    def confirmed(environ, start_response):
        if environ.get('HTTP_X_IDENTITY_STATUS') != 'Confirmed':
            payload = json.dumps({'error': 'a valid Keystone token is '
                                           'required'}).encode()
            start_response('401 Unauthorized', JSON + [
                ('Content-Length', str(len(payload)))])
            return [payload]
        return app(environ, start_response)

    return auth_token.AuthProtocol(confirmed, {
        'oslo_config_config': conf or conf_pkg.CONF,
        'delay_auth_decision': True})


def build(config_files: list[str]):
    """The application from these configuration files (nova.conf)."""
    from vgpu_nova_ext import conf as conf_pkg
    from vgpu_nova_ext.conf import devices as devices_conf

    conf = conf_pkg.CONF
    conf(args=[], project='nova', default_config_files=config_files,
         use_env=False)
    device_config = devices_conf.load_device_config(config_files)
    settings = licensing.load(conf.vgpu_licensing, device_config)
    app = VendordataApp(
        settings, placement.PlacementClient.from_config(config_files),
        list(device_config.type_ids),
        {t.mdev_class for t in device_config.types},
        max_body_bytes=conf.vgpu_vendordata.max_body_bytes)
    if needs_auth(conf.vgpu_vendordata.listen):
        return require_keystone(app, conf)
    return app


def init_application():
    """The application for WSGI servers (uwsgi, mod_wsgi).

    Configuration: the files in ``VGPU_NOVA_EXT_CONFIG_FILES``
    (comma-separated), else nova.conf.
    """
    files = os.environ.get('VGPU_NOVA_EXT_CONFIG_FILES',
                           '/etc/nova/nova.conf')
    return build([f for f in files.split(',') if f])
