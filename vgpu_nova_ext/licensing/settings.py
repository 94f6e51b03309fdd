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
"""The licensing settings (``[vgpu_licensing]``): read, checked, and the
token loaded as a :class:`~vgpu_nova_ext.vendors.types.Secret`, whose
``repr`` and ``str`` are a fingerprint, so that it never reaches a log, an
exception or the command line. Pure, but for ``load()``.
"""

import ipaddress
import re

from vgpu_nova_ext.conf import loader
from vgpu_nova_ext import exception
from vgpu_nova_ext import files
from vgpu_nova_ext.vendors import base as vendors_base
from vgpu_nova_ext.vendors import types as vendor_types

MAX_TOKEN_BYTES = 64 * 1024
_HOSTNAME_RE = re.compile(
    r'^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)'
    r'(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$')
_TOKEN_RE = re.compile(r'^[\x21-\x7e]+$')


# -- validation ---------------------------------------------------------------
def _check_text(option: str, value) -> list[str]:
    if value is None:
        return []
    text = str(value)
    if any(ord(c) < 0x20 or ord(c) == 0x7f for c in text):
        return ['[vgpu_licensing] %s holds a control character or a '
                'newline; write it on one line' % option]
    return []


def _check_address(option: str, value: str | None) -> list[str]:
    if value is None:
        return []
    problems = _check_text(option, value)
    if problems:
        return problems
    try:
        ipaddress.ip_address(value)
        return []
    except ValueError:
        pass
    if not _HOSTNAME_RE.match(value):
        return ['[vgpu_licensing] %s = %r is neither a host name nor an IP '
                'address' % (option, value)]
    return []


def validate(settings: vendor_types.LicensingSettings) -> list[str]:
    """Every problem of the settings, each naming its option."""
    problems = []
    if settings.enabled and settings.token is None and \
            not settings.server_address:
        problems.append(
            '[vgpu_licensing] enabled = true needs client_config_token_file '
            '(NVIDIA License System) or server_address (legacy license '
            'server)')
    problems += _check_address('server_address', settings.server_address)
    problems += _check_address('backup_server_address',
                               settings.backup_server_address)
    for option in ('server_port', 'backup_server_port'):
        port = getattr(settings, option)
        if not 1 <= int(port) <= 65535:
            problems.append('[vgpu_licensing] %s = %s is not a port (1 to '
                            '65535)' % (option, port))
    allowed = ('auto', '0', '1', '2', '4')
    if str(settings.feature_type) not in allowed:
        problems.append('[vgpu_licensing] feature_type = %r: use one of %s'
                        % (settings.feature_type, ', '.join(allowed)))
    for type_id, value in settings.type_feature_types:
        if str(value) not in allowed[1:]:
            problems.append('[mdev_%s] feature_type = %r: use 0, 1, 2 or 4'
                            % (type_id, value))
    return problems


def read_token(path: str) -> vendor_types.Secret:
    """The token file's content, checked, as a Secret.

    :raises ConfigError: naming the option and the file, never the content.
    """
    where = '[vgpu_licensing] client_config_token_file = %s' % path
    data = files.read_file(path, '[vgpu_licensing] client_config_token_file',
                           MAX_TOKEN_BYTES)
    data = data.strip()
    try:
        text = data.decode('ascii')
    except UnicodeDecodeError:
        text = None
    if not data or text is None or not _TOKEN_RE.match(text):
        raise exception.ConfigError(
            '%s: not a client configuration token (it must be one line of '
            'printable text); download it again from the NVIDIA License '
            'System' % where)
    return vendor_types.Secret(data)


def load(conf, device_config=None) -> vendor_types.LicensingSettings:
    """Settings from ``[vgpu_licensing]`` of ``conf`` and the type groups.

    :raises ConfigError: with every problem, each naming its option.
    """
    group = conf.vgpu_licensing
    values = {}
    problems = []
    for name in ('enabled', 'client_config_token_file', 'server_address',
                 'server_port', 'backup_server_address',
                 'backup_server_port', 'feature_type', 'license_interval',
                 'linger_interval', 'enable_ui', 'vendor'):
        try:
            values[name] = getattr(group, name)
        except ValueError as exc:
            problems.append(loader.invalid(conf, 'vgpu_licensing', name,
                                           exc))
    if problems:
        raise exception.ConfigError('; '.join(problems))
    token = None
    if values['client_config_token_file']:
        token = read_token(values['client_config_token_file'])
    overrides = tuple(
        (t.type_id, t.feature_type) for t in (
            device_config.types if device_config else ())
        if t.feature_type is not None)
    del values['client_config_token_file']
    settings = vendor_types.LicensingSettings(
        token=token, type_feature_types=overrides, **values)
    problems = validate(settings)
    installed = vendors_base.loaded().names
    if settings.vendor not in installed:
        problems.append(
            '[vgpu_licensing] vendor = %r: no vendor plugin of that name is '
            'installed; use one of %s' % (settings.vendor,
                                          ', '.join(installed)))
    if problems:
        raise exception.ConfigError('; '.join(problems))
    return settings
