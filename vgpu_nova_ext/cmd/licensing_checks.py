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
"""The licensing findings of ``vgpu-nova-ext check``."""

import os
import stat

from vgpu_nova_ext.conf import loader
from vgpu_nova_ext.conf import raw
from vgpu_nova_ext import exception
from vgpu_nova_ext import findings
from vgpu_nova_ext.licensing import settings as licensing

_TRUE = ('true', '1', 'yes', 'on')


def _nova_options(config_files) -> dict[tuple[str, str], str]:
    """The few Nova options that decide how guests get their licensing."""
    parser = raw.read(config_files)
    wanted = {('DEFAULT', 'force_config_drive'),
              ('api', 'vendordata_providers'),
              ('api', 'vendordata_dynamic_targets')}
    found = {}
    for section, option in wanted:
        if parser.has_option(section, option):
            found[(section, option)] = parser.get(section, option)
    return found


def check(conf, device_config, config_files) -> list[findings.Finding]:
    group = conf.vgpu_licensing
    problems = []
    try:
        if not group.enabled:
            return []
        licensing.load(conf, device_config)
    except (exception.ConfigError, ValueError) as exc:
        if isinstance(exc, ValueError):
            exc = loader.invalid(conf, 'vgpu_licensing', 'enabled', exc)
        return [findings.Finding(
            findings.LICENSING_CONFIG, findings.ERROR, '[vgpu_licensing]', '',
            str(exc), 'correct the options named')]
    path = group.client_config_token_file
    if path and os.path.exists(path):
        mode = os.stat(path).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            problems.append(findings.Finding(
                findings.LICENSING_TOKEN_READABLE, findings.WARNING,
                '[vgpu_licensing] client_config_token_file', path,
                'the token file is open to others (mode %04o)'
                % stat.S_IMODE(mode),
                'chmod 600 %s and make it owned by the nova user' % path))
        if not os.access(path, os.R_OK):
            problems.append(findings.Finding(
                findings.LICENSING_TOKEN_UNREADABLE, findings.WARNING,
                '[vgpu_licensing] client_config_token_file', path,
                'this user cannot read the token file',
                'give the nova user read access (and run check as it)'))
    nova = _nova_options(config_files)
    drive = nova.get(('DEFAULT', 'force_config_drive'), '').lower()
    providers = nova.get(('api', 'vendordata_providers'), '')
    targets = nova.get(('api', 'vendordata_dynamic_targets'), '')
    dynamic = 'DynamicJSON' in providers and 'cloud-init@' in targets
    if drive not in _TRUE and not dynamic:
        problems.append(findings.Finding(
            findings.LICENSING_NO_DELIVERY, findings.WARNING,
            '[DEFAULT] force_config_drive', drive or '(unset)',
            'neither is a config drive forced nor is the vendordata target '
            'configured, so a guest that asks for neither gets no '
            'licensing',
            'set [DEFAULT] force_config_drive = true, or [api] '
            'vendordata_providers = StaticJSON,DynamicJSON and '
            'vendordata_dynamic_targets = cloud-init@http://127.0.0.1:9876/'))
    return problems
