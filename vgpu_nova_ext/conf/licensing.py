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
"""``[vgpu_licensing]``: what a vGPU guest needs to come up licensed.

On the global CONF (no other project owns these names). The per-type
``feature_type`` override lives in the type's own group
(``[mdev_<type>]``), read with the other per-type options.
"""

from oslo_config import cfg

from vgpu_nova_ext.conf import loader

GROUP = 'vgpu_licensing'
FEATURE_TYPES = ('auto', '0', '1', '2', '4')

licensing_group = cfg.OptGroup(
    name=GROUP, title='NVIDIA vGPU guest licensing',
    help='Delivered to every guest that holds a vGPU, through the config '
         'drive and the vendordata service: /etc/nvidia/gridd.conf and the '
         'NLS client configuration token for Linux guests; the token and '
         'the GridLicensing registry values for Windows guests.')

licensing_opts = [
    cfg.BoolOpt(
        'enabled', default=False,
        help='Give vGPU guests their licensing configuration. Needs '
             '``client_config_token_file`` or ``server_address``.'),
    cfg.StrOpt(
        'client_config_token_file',
        help='Path, on the compute host, of the NVIDIA License System (NLS) '
             'client configuration token (a ``.tok`` file downloaded from '
             'the NLS portal or a DLS appliance). With vGPU software 13 and '
             'later the token carries the license service\'s address, so '
             'this is all most deployments need. The file must be readable '
             'by nova-compute and by no one else: ``vgpu-nova-ext check`` '
             'warns otherwise. Its content is never logged or printed; '
             'commands show a fingerprint.'),
    cfg.HostAddressOpt(
        'server_address',
        help='Legacy license server (host name or IP address), written as '
             '``ServerAddress`` in gridd.conf. Not needed with an NLS '
             'client configuration token.'),
    cfg.PortOpt(
        'server_port', default=7070,
        help='Port of ``server_address`` (``ServerPort`` in gridd.conf).'),
    cfg.HostAddressOpt(
        'backup_server_address',
        help='Backup legacy license server (``BackupServerAddress``).'),
    cfg.PortOpt(
        'backup_server_port', default=7070,
        help='Port of ``backup_server_address`` (``BackupServerPort`` in '
             'gridd.conf).'),
    cfg.StrOpt(
        'feature_type', default='auto', choices=[
            ('auto', '1 for every vGPU type, as NVIDIA documents for '
                     'vGPUs'),
            ('0', 'unlicensed'),
            ('1', 'NVIDIA vGPU: the edition follows from the vGPU type'),
            ('2', 'NVIDIA RTX Virtual Workstation'),
            ('4', 'NVIDIA Virtual Compute Server')],
        help='``FeatureType`` of gridd.conf (and of the GridLicensing '
             'registry key on Windows). A type\'s own group can override '
             'it: ``[mdev_<type>] feature_type``.'),
    cfg.IntOpt(
        'license_interval', min=10, max=10080,
        help='``LicenseInterval``: minutes a license is borrowed for (10 to '
             '10080); unset: the driver\'s default (1440).'),
    cfg.IntOpt(
        'linger_interval', min=0, max=10080,
        help='``LingerInterval``: minutes a license stays checked out after '
             'the guest shuts down (0 to 10080); unset: the driver\'s '
             'default.'),
    cfg.StrOpt(
        'vendor', default='nvidia',
        help='The vendor plugin (stevedore namespace '
             '``vgpu_nova_ext.vendors``) that says which files a licensed '
             'guest needs. ``nvidia`` also for the mtty sample in CI, so '
             'that the licensing path is exercised without a GPU; '
             '``generic`` delivers nothing.'),
    cfg.BoolOpt(
        'enable_ui', default=False,
        help='Show the licensing page in the guest\'s NVIDIA control panel '
             '(``EnableUI`` on Linux; on Windows the page is hidden with '
             '``NvCplDisableManageLicensePage`` when false).'),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    loader.register_group(conf, licensing_group)
    conf.register_opts(licensing_opts, group=licensing_group)


def list_opts():
    return [(licensing_group, licensing_opts)]
