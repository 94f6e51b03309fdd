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

import dataclasses
import json
import sys

from vgpu_nova_ext.cmd import common
from vgpu_nova_ext import exception
from vgpu_nova_ext import inventory
from vgpu_nova_ext.placement import audit as audit_mod
from vgpu_nova_ext.placement import client as placement
from vgpu_nova_ext.placement import ownership


def add_parser(sub) -> None:
    parser = sub.add_parser(
        'audit', help='compare Placement with what this host should report',
        description='Read this host\'s providers from Placement (through '
                    'the [placement] options of the configuration) and '
                    'print every difference from what it should report.')
    parser.add_argument('--format', choices=('table', 'json'),
                        default='table')
    parser.add_argument(
        '--ownership', action='store_true',
        help='audit who holds which vGPU instead: Placement\'s allocations, '
             'the ledger, the host\'s devices and the guests\' domains, '
             'joined (read-only)')
    parser.add_argument(
        '--libvirt-uri', default='qemu:///system', metavar='URI',
        help='with --ownership: the libvirt to read the guests\' domains '
             'from, read-only (default: qemu:///system)')
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
    if args.ownership:
        return run_ownership(args, plan, client)
    result = audit_mod.audit(client, plan.host, plan.assignment)
    if args.format == 'json':
        json.dump(as_dict(result), sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        print(render(result))
    return 1 if result.drift else 0


def _finding(finding) -> dict:
    body = dataclasses.asdict(finding)
    # Until 3.0: this output's keys before one finding type (scripts read
    # them); deprecated in the release note.
    body.update(kind=finding.code.split('.', 1)[1], subject=finding.where,
                detail=finding.why)
    return body


def run_ownership(args, plan, client) -> int:
    gpus = {inventory.provider_name(plan.host, a.gpu.name): a.gpu.name
            for a in plan.assignment.gpus}
    start = client.requests
    allocations = ownership.read_allocations(client, plan.host, gpus)
    reads = client.requests - start
    guests, note = ownership.open_guests(args.libvirt_uri)
    ledger = common.read_ledger(args, plan)
    findings = ownership.join(allocations, ledger.all(), ledger.links(),
                              plan.snapshot, guests)
    if args.format == 'json':
        json.dump({'host': plan.host, 'placement_reads': reads,
                   'guests_read': guests is not None,
                   'allocations': [dataclasses.asdict(a)
                                   for a in allocations],
                   'findings': [_finding(f) for f in findings]},
                  sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        print('Host %s: %d vGPU allocation(s) in Placement (%d reads), '
              '%d finding(s)' % (plan.host, len(allocations), reads,
                                 len(findings)))
        if note:
            print('(%s)' % note)
        if findings:
            print()
            print(common.format_table(
                ['CODE', 'SUBJECT', 'DETAIL', 'FIX'],
                [[f.code, f.where, f.why, f.fix] for f in findings]))
    return 1 if findings else 0
