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
"""``vgpu-nova-ext license render``: what a vGPU guest would receive.

The token is shown as its fingerprint, never as itself.
"""

import argparse

from vgpu_nova_ext.cmd import common
from vgpu_nova_ext import exception
from vgpu_nova_ext.licensing import render as licensing_render
from vgpu_nova_ext.licensing import settings as licensing
from vgpu_nova_ext.licensing import vendordata
from vgpu_nova_ext.placement import client as placement
from vgpu_nova_ext.vendors import types as vendor_types


def add_parser(sub) -> None:
    parser = sub.add_parser(
        'license', help='show the licensing configuration guests receive')
    actions = parser.add_subparsers(dest='action', metavar='ACTION')
    actions.required = True
    render = actions.add_parser(
        'render', help='print what a guest would receive',
        description='Print the files (and commands) a guest holding a vGPU '
                    'of this type, or this instance, would receive; the '
                    'token appears as its fingerprint.')
    which = render.add_mutually_exclusive_group(required=True)
    which.add_argument('--mdev-type', metavar='TYPE')
    which.add_argument('--instance', metavar='UUID',
                       help='look the instance\'s vGPU up in Placement')
    render.add_argument('--os',
                        choices=(vendor_types.LINUX, vendor_types.WINDOWS),
                        default=vendor_types.LINUX)
    render.add_argument(
        '--metadata', metavar='KEY=VALUE', action='append', default=[],
        type=_metadata_item,
        help='instance metadata the guest is booted with (repeatable), '
             'e.g. vgpu_nova_ext:gpu_operator=true for a Kubernetes worker '
             'running NVIDIA\'s GPU Operator')
    render.set_defaults(func=run_render)


def _metadata_item(text: str) -> tuple[str, str]:
    key, sep, value = text.partition('=')
    if not sep or not key:
        raise argparse.ArgumentTypeError(
            '%r: give KEY=VALUE, as openstack server create --property '
            'takes it' % text)
    return key, value


def _show(guest_file: vendor_types.GuestFile) -> str:
    if isinstance(guest_file.content, vendor_types.Secret):
        body = (guest_file.content.shown or (
            '(the client configuration token, %s)' % (
                guest_file.content.fingerprint))).rstrip()
    else:
        body = guest_file.content.decode().rstrip()
    return '--- %s (mode %04o)\n%s' % (guest_file.path, guest_file.mode,
                                       body)


#: What each channel makes of the files in a Linux guest (cloud-init's own
#: code, tested in tests/unit/test_guest_cloudinit.py).
LINUX_CHANNELS = (
    'Through vendor data (the vendordata service, a cloud-config): these '
    'files with these modes, then the command above.',
    'Through the config drive alone: cloud-init writes the same files at '
    'first boot with mode 0660 (DataSourceConfigDrive) and runs nothing, '
    'so nvidia-gridd reads them when it next starts.')
#: cloudbase-init writes no config drive files and reads no vendor data.
WINDOWS_CHANNELS = (
    'Through the config drive: the files are on the drive; an image script '
    '(cloudbase-init LocalScripts) must run the .ps1, which applies them.',)


def print_guest(found: vendor_types.GuestLicensing, indent: str = '',
                os_type: str = vendor_types.LINUX) -> None:
    for guest_file in found.files:
        print(indent + _show(guest_file).replace('\n', '\n' + indent))
    for command in found.commands:
        print('%s--- then runs: %s' % (indent, ' '.join(command)))
    for line in (WINDOWS_CHANNELS if os_type == vendor_types.WINDOWS
                 else LINUX_CHANNELS):
        print('%s%s' % (indent, line))


def run_render(args) -> int:
    plan = common.build_plan(args)
    settings = licensing.load(common.CONF, plan.device_config)
    if not settings.enabled:
        print('[vgpu_licensing] enabled is false: guests receive nothing')
        return 0
    type_id = args.mdev_type
    if args.instance:
        if not plan.config_files:
            raise exception.ConfigError(
                '--instance reads the instance\'s allocations from '
                'Placement: give --config-file with [placement]')
        app = vendordata.VendordataApp(
            settings, placement.PlacementClient.from_conf(plan.shared_conf),
            list(plan.device_config.type_ids),
            {t.mdev_class for t in plan.device_config.types})
        type_id = app.vgpu_type(args.instance)
        if type_id is False:
            print('instance %s holds no vGPU: it receives nothing'
                  % args.instance)
            return 0
    found = licensing_render.guest_licensing(
        settings, type_id, args.os, metadata=dict(args.metadata),
        instance=args.instance)
    print('A %s guest holding %s receives:' % (args.os,
                                               type_id or 'a vGPU'))
    print_guest(found, os_type=args.os)
    return 0
