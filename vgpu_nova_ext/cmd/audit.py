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
"""``vgpu-nova-ext audit``: Placement against what this host should have.

Read-only. Exit 0: no drift; 1: drift; 2: Placement unreachable, the
compute node unknown, or the configuration unreadable.
"""

import json
import sys

from vgpu_nova_ext.cmd import common
from vgpu_nova_ext import exception
from vgpu_nova_ext.placement import audit as audit_mod
from vgpu_nova_ext.placement import client as placement


def add_parser(sub) -> None:
    parser = sub.add_parser(
        'audit', help='compare Placement with what this host should report',
        description='Read this host\'s providers from Placement (through '
                    'the [placement] options of the configuration) and '
                    'print every difference from what it should report.')
    parser.add_argument('--format', choices=('table', 'json'),
                        default='table')
    parser.set_defaults(func=run)


def as_dict(result: audit_mod.AuditResult) -> dict:
    return {'host': result.host, 'drift': [
        {'provider': d.provider, 'kind': d.kind, 'expected': d.expected,
         'actual': d.actual} for d in result.drift]}


def render(result: audit_mod.AuditResult) -> str:
    if not result.drift:
        return ('Host %s: Placement matches this host (%d GPU providers, '
                '%d reads)' % (result.host, len(result.desired.providers),
                               result.reads))
    rows = [[d.provider, d.kind, json.dumps(d.expected, sort_keys=True),
             json.dumps(d.actual, sort_keys=True)] for d in result.drift]
    return 'Host %s: %d drift(s)\n\n%s' % (
        result.host, len(result.drift), common.format_table(
            ['PROVIDER', 'KIND', 'EXPECTED', 'ACTUAL'], rows))


def run(args) -> int:
    plan = common.build_plan(args)
    if not plan.config_files:
        raise exception.ConfigError(
            'audit reads the [placement] options of nova.conf: give '
            '--config-file (the one nova-compute uses)')
    client = placement.PlacementClient.from_conf(plan.shared_conf)
    result = audit_mod.audit(client, plan.host, plan.assignment)
    if args.format == 'json':
        json.dump(as_dict(result), sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        print(render(result))
    return 1 if result.drift else 0
