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
"""``vgpu-nova-ext inventory``: what this host would report to Placement."""

import dataclasses
import json
import sys

import os_traits

from vgpu_nova_ext.cmd import common
from vgpu_nova_ext.devices import scheduling
from vgpu_nova_ext.host import mig


def add_parser(sub) -> None:
    parser = sub.add_parser(
        'inventory', help='show the GPU providers this host would report',
        description='Show the GPU resource providers, inventories and '
                    'traits this compute node would report to Placement.')
    parser.add_argument('--format', choices=('table', 'json'),
                        default='table')
    parser.set_defaults(func=run)


def as_dict(plan: common.Plan) -> dict:
    return {
        'host': plan.host,
        'providers': [{
            'name': p.name,
            'uuid': p.uuid,
            'parent': p.parent,
            'device_address': p.device_address,
            'mdev_type': p.mdev_type,
            'type_name': p.type_name,
            'resource_class': p.resource_class,
            'total': p.total,
            'used': p.used,
            'traits': list(p.traits),
        } for p in plan.providers],
        'problems': [_problem(p) for p in plan.assignment.problems],
        'gpu_instances': [{
            'address': address, 'layout': layout, 'type': type_id,
            'vgpus_per_instance': per_gi}
            for address, layout, type_id, per_gi in _carved(plan)],
        'vgpu_schedulers': [{
            'address': p.gpu, 'type': p.type_id,
            'declared': p.declared.words(),
            'in_force': p.actual.words() if p.actual else None,
            'action': str(p.action)}
            for p in scheduling.plan(plan.device_config, plan.assignment)],
    }


def _carved(plan: common.Plan) -> list[tuple]:
    """(GPU, layout, type served, its vGPUs per instance) in MIG mode."""
    served = {a.gpu.address: a for a in plan.assignment.gpus
              if a.type_info.gpu_instance_profile is not None}
    out = []
    for gpu in plan.snapshot.gpus:
        if gpu.mig is None or not gpu.mig.enabled:
            continue
        found = served.get(gpu.address)
        out.append((gpu.address, mig.words(gpu.mig.layout()) or 'none',
                    found.type_id if found else None,
                    (found.type_info.max_per_gi or 1) if found else None))
    return out


def _problem(finding) -> dict:
    body = dataclasses.asdict(finding)
    # Until 3.0: the names of this output's keys before one finding type
    # (scripts read them); deprecated in the release note.
    body.update(option=finding.where, message=finding.why)
    return body


def run(args) -> int:
    plan = common.build_plan(args)
    if args.format == 'json':
        json.dump(as_dict(plan), sys.stdout, indent=2)
        print()
    else:
        print(render_table(plan))
    return 2 if plan.assignment.errors else 0


def render_table(plan: common.Plan) -> str:
    lines = ['Host %s: %s' % (plan.host, plan.backend)]
    if plan.config_note:
        lines.append('(%s)' % plan.config_note)
    totals: dict[str, int] = {}
    for p in plan.providers:
        totals[p.resource_class] = totals.get(p.resource_class, 0) + p.total
    lines.append('%d GPU provider(s): %s' % (len(plan.providers), ', '.join(
        '%d %s' % (n, rc) for rc, n in sorted(totals.items())) or 'nothing'))
    if plan.providers:
        lines.append('')
        lines.append(common.format_table(
            ['PROVIDER', 'ADDRESS', 'TYPE', 'NAME', 'CLASS', 'TOTAL', 'USED',
             'TRAITS'],
            [[p.name, p.device_address, p.mdev_type, p.type_name or '-',
              p.resource_class, str(p.total), str(p.used),
              ' '.join(t for t in p.traits
                       if t.startswith(os_traits.CUSTOM_NAMESPACE))]
             for p in plan.providers]))
    carved = _carved(plan)
    if carved:
        lines.append('')
        lines.append('MIG GPU instances: %s' % '; '.join(
            '%s %s%s' % (address, layout, ' (%s: %d per instance)' % (
                type_id, per_gi) if type_id else '')
            for address, layout, type_id, per_gi in carved))
    schedulers = scheduling.plan(plan.device_config, plan.assignment)
    if schedulers:
        lines.append('')
        lines.append('vGPU schedulers: %s' % '; '.join(
            '%s %s' % (p.gpu, p.words()) for p in schedulers))
    if plan.mig.problems or plan.assignment.problems:
        lines.append('')
        lines.append('Problems (run "check" for the fixes):')
        for problem in plan.mig.problems + plan.assignment.problems:
            lines.append('  %-7s %s' % (problem.severity.upper(),
                                        problem.why))
    return '\n'.join(lines)
