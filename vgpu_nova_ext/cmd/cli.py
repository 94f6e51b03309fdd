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
"""The ``vgpu-nova-ext`` command line.

Global options come before the sub-command::

    vgpu-nova-ext [--config-file FILE]... [--config-dir DIR]...
                  [--sysfs-root DIR | --simulate P]
                  [--state-path DIR] [--host NAME] COMMAND ...

COMMAND is one of inventory, check, audit, devices, reconcile, bring-up,
metrics, license, demo.
"""

import argparse
import sys

from vgpu_nova_ext.cmd import audit
from vgpu_nova_ext.cmd import check
from vgpu_nova_ext.cmd import demo
from vgpu_nova_ext.cmd import devices
from vgpu_nova_ext.cmd import inventory
from vgpu_nova_ext.cmd import license
from vgpu_nova_ext.cmd import metrics
from vgpu_nova_ext import conf as conf_pkg
from vgpu_nova_ext.conf import logs
from vgpu_nova_ext import exception
from vgpu_nova_ext.host import simulated

EXIT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='vgpu-nova-ext',
        description='NVIDIA vGPU for OpenStack Nova: see what this compute '
                    'node offers and check its configuration.')
    parser.add_argument(
        '--config-file', action='append', metavar='FILE',
        help='a nova.conf to read (repeatable, later files win); default: '
             '/etc/nova/nova.conf, or with --simulate the profile\'s '
             'example configuration')
    parser.add_argument(
        '--config-dir', action='append', metavar='DIR',
        help='a directory whose .conf files are read after the files, in '
             'name order (repeatable), as nova-compute reads '
             'nova.conf.d/ snippets')
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        '--sysfs-root', metavar='DIR',
        help='read the host from DIR/sys instead of /sys (a copy of a '
             'host\'s tree, for a dry run)')
    source.add_argument(
        '--simulate', metavar='PROFILE',
        help='use a simulated host: a built-in profile (%s) or a YAML '
             'profile path' % ', '.join(simulated.builtin_profiles()))
    parser.add_argument(
        '--state-path', metavar='DIR',
        help='the directory of the device ledger (default: [vgpu_nova_ext] '
             'state_path); with --simulate, the simulated host is kept '
             'there too')
    parser.add_argument(
        '--debug', action='store_true',
        help='log at DEBUG level (oslo.log; the log goes to stderr)')
    parser.add_argument(
        '--log-file', metavar='FILE',
        help='write the log to FILE instead of stderr (the files\' '
             '[DEFAULT] log_file, log_dir and log_config_append count too)')
    parser.add_argument(
        '--host', metavar='NAME',
        help='the compute node provider\'s name (default: this host\'s '
             'hypervisor host name, as Nova names it)')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True
    inventory.add_parser(sub)
    check.add_parser(sub)
    audit.add_parser(sub)
    devices.add_parsers(sub)
    metrics.add_parser(sub)
    license.add_parser(sub)
    demo.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # What an earlier parse left (one process may run several commands)
    # must not configure this one's logging.
    conf_pkg.CONF.clear()
    try:
        logs.set_up(conf_pkg.CONF, 'vgpu-nova-ext', debug=args.debug,
                    log_file=args.log_file, quiet=True)
        return args.func(args)
    except exception.VGPUNovaExtError as exc:
        print('vgpu-nova-ext %s: error: %s' % (args.command, exc),
              file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (head, less) went away: not an error of ours.
        sys.stderr.close()
        return 0


if __name__ == '__main__':
    sys.exit(main())
