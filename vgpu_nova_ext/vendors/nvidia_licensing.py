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
"""NVIDIA guest licensing: what NVIDIA's licensing guide has an
administrator do by hand in each guest.

- Linux: ``/etc/nvidia/gridd.conf`` (``ServerAddress``, ``ServerPort``,
  ``BackupServerAddress``, ``BackupServerPort``, ``FeatureType``,
  ``EnableUI``, ``LicenseInterval``, ``LingerInterval``) and the NLS client
  configuration token in ``/etc/nvidia/ClientConfigToken/`` with mode 0744,
  then ``nvidia-gridd`` restarted (the modes and the restart hold for the
  vendor data's cloud-config; files injected through the config drive alone
  are written by cloud-init with mode 0660 and nothing is restarted);
- Windows: the token in ``C:\\Program Files\\NVIDIA Corporation\\vGPU
  Licensing\\ClientConfigToken\\`` and the values of the registry key
  ``HKLM\\SYSTEM\\CurrentControlSet\\Services\\nvlddmkm\\Global\\
  GridLicensing``, applied by a PowerShell script that ships beside the
  token on the config drive, then the NVIDIA Display Container service
  restarted.
"""

import os

from vgpu_nova_ext.vendors import types as vendor_types

GRIDD_CONF = '/etc/nvidia/gridd.conf'
TOKEN_DIR = '/etc/nvidia/ClientConfigToken'
TOKEN_NAME = 'client_configuration_token.tok'
# NVIDIA's licensing guide: "chmod 744" on the token in the guest.
TOKEN_MODE = 0o744
GRIDD_MODE = 0o644
WINDOWS_TOKEN_DIR = ('C:\\Program Files\\NVIDIA Corporation\\vGPU Licensing'
                     '\\ClientConfigToken')
WINDOWS_REGISTRY_KEY = ('HKLM:\\SYSTEM\\CurrentControlSet\\Services\\'
                        'nvlddmkm\\Global\\GridLicensing')
WINDOWS_SERVICE = 'NVDisplay.ContainerLocalSystem'
# Where the Windows files sit among the config drive's files; the image's
# cloudbase-init local script runs the script from there (see the docs).
CONFIG_DRIVE_WINDOWS_DIR = '/vgpu-nova-ext/windows'
FEATURE_VGPU = 1
# nvidia-gridd may not be installed yet (a driver installed later reads
# the files when it starts): never fail the boot for it.
RESTART_GRIDD = ('sh', '-c', 'systemctl try-restart nvidia-gridd.service '
                             '|| true')


def feature_type(settings, type_id: str | None) -> int:
    """FeatureType for a type.

    ``auto`` is 1 (NVIDIA vGPU: the edition follows from the vGPU type)
    for every type, unless the type's own group says otherwise.
    """
    for overridden, value in settings.type_feature_types:
        if overridden == type_id:
            return int(value)
    if settings.feature_type == 'auto':
        return FEATURE_VGPU
    return int(settings.feature_type)


def gridd_conf(settings, type_id: str | None) -> str:
    lines = ['# Written by vgpu-nova-ext for this instance\'s vGPU.']
    if settings.server_address:
        lines += ['ServerAddress=%s' % settings.server_address,
                  'ServerPort=%d' % settings.server_port]
    if settings.backup_server_address:
        lines += ['BackupServerAddress=%s' % settings.backup_server_address,
                  'BackupServerPort=%d' % settings.backup_server_port]
    lines.append('FeatureType=%d' % feature_type(settings, type_id))
    lines.append('EnableUI=%s' % ('TRUE' if settings.enable_ui else 'FALSE'))
    if settings.license_interval is not None:
        lines.append('LicenseInterval=%d' % settings.license_interval)
    if settings.linger_interval is not None:
        lines.append('LingerInterval=%d' % settings.linger_interval)
    return '\n'.join(lines) + '\n'


def linux(settings, type_id: str | None) -> vendor_types.GuestLicensing:
    files = [vendor_types.GuestFile(
        GRIDD_CONF, gridd_conf(settings, type_id).encode(), GRIDD_MODE)]
    if settings.token is not None:
        files.append(vendor_types.GuestFile(
            os.path.join(TOKEN_DIR, TOKEN_NAME), settings.token, TOKEN_MODE))
    return vendor_types.GuestLicensing(files=tuple(files),
                                       commands=(RESTART_GRIDD,))


def windows_registry(settings, type_id: str | None
                     ) -> list[tuple[str, str, object]]:
    """(name, PowerShell property type, value) of the GridLicensing key."""
    values: list[tuple[str, str, object]] = [
        ('FeatureType', 'DWord', feature_type(settings, type_id))]
    if settings.server_address:
        values += [('ServerAddress', 'String', settings.server_address),
                   ('ServerPort', 'String', str(settings.server_port))]
    if settings.backup_server_address:
        values += [('BackupServerAddress', 'String',
                    settings.backup_server_address),
                   ('BackupServerPort', 'String',
                    str(settings.backup_server_port))]
    if settings.license_interval is not None:
        values.append(('LicenseInterval', 'DWord',
                       settings.license_interval))
    if settings.linger_interval is not None:
        values.append(('LingerInterval', 'DWord', settings.linger_interval))
    values.append(('NvCplDisableManageLicensePage', 'DWord',
                   0 if settings.enable_ui else 1))
    return values


def _ps_quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def windows_script(settings, type_id: str | None) -> str:
    """PowerShell that applies the configuration; the token is beside it."""
    lines = [
        '# Written by vgpu-nova-ext: NVIDIA vGPU licensing for this guest.',
        '$ErrorActionPreference = "Stop"',
        '$key = %s' % _ps_quote(WINDOWS_REGISTRY_KEY),
        'New-Item -Path $key -Force | Out-Null',
    ]
    for name, kind, value in windows_registry(settings, type_id):
        shown = value if kind == 'DWord' else _ps_quote(str(value))
        lines.append('New-ItemProperty -Path $key -Name %s -PropertyType %s '
                     '-Value %s -Force | Out-Null' % (name, kind, shown))
    if settings.token is not None:
        lines += [
            '$tokens = %s' % _ps_quote(WINDOWS_TOKEN_DIR),
            'New-Item -ItemType Directory -Path $tokens -Force | Out-Null',
            'Copy-Item -Path (Join-Path $PSScriptRoot %s) -Destination '
            '(Join-Path $tokens %s) -Force' % (_ps_quote(TOKEN_NAME),
                                               _ps_quote(TOKEN_NAME)),
        ]
    lines.append('Restart-Service -Name %s -ErrorAction SilentlyContinue'
                 % _ps_quote(WINDOWS_SERVICE))
    return '\r\n'.join(lines) + '\r\n'


def windows(settings, type_id: str | None) -> vendor_types.GuestLicensing:
    files = [vendor_types.GuestFile(
        CONFIG_DRIVE_WINDOWS_DIR + '/apply-licensing.ps1',
        windows_script(settings, type_id).encode(), 0o644)]
    if settings.token is not None:
        files.append(vendor_types.GuestFile(
            CONFIG_DRIVE_WINDOWS_DIR + '/' + TOKEN_NAME, settings.token,
            0o644))
    return vendor_types.GuestLicensing(files=tuple(files))
