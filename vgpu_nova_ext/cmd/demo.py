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
"""``vgpu-nova-ext demo``: the whole flow against an embedded Placement.

A simulated host (``v100x8`` unless ``--simulate`` says otherwise), the
real ``openstack-placement`` on 127.0.0.1 with SQLite in a temporary
directory: the compute node provider, the GPU providers written with as
few calls as Placement allows, the providers as Placement holds them, the
allocation candidates for ``VGPU:1`` and for a type pinned by trait, and
the audit, which finds no drift; then what a vGPU guest receives to come up
licensed.
"""

import argparse
import collections
import importlib.util

import os_traits

from vgpu_nova_ext.cmd import audit as audit_cmd
from vgpu_nova_ext.cmd import common
from vgpu_nova_ext.cmd import license as license_cmd
from vgpu_nova_ext import exception
from vgpu_nova_ext import inventory
from vgpu_nova_ext.licensing import render as licensing_render
from vgpu_nova_ext.licensing import settings as licensing
from vgpu_nova_ext.placement import audit as audit_mod
from vgpu_nova_ext.placement import client as placement
from vgpu_nova_ext.placement import embedded as placement_server
from vgpu_nova_ext.placement import publish
from vgpu_nova_ext.vendors import types as vendor_types

DEFAULT_PROFILE = 'v100x8'
# The compute node's own inventory, as nova-compute would report it, so
# that candidates look as they do in a cloud.
ROOT_INVENTORY = {'VCPU': 64, 'MEMORY_MB': 524288, 'DISK_GB': 2000}
DEMO_TOKEN = b'demo-client-configuration-token'


def add_parser(sub) -> None:
    parser = sub.add_parser(
        'demo', help='run the whole flow against an embedded Placement',
        description=__doc__.split('\n\n')[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(func=run)


def _say(title: str) -> None:
    print('\n== %s' % title)


def run(args) -> int:
    if importlib.util.find_spec('placement') is None:
        raise exception.VGPUNovaExtError(
            'the demo needs the openstack-placement package: pip install '
            '"vgpu-nova-ext[demo]"')
    if not args.simulate and not args.sysfs_root:
        args.simulate = DEFAULT_PROFILE
    plan = common.build_plan(args)
    _say('Host %s: %s' % (plan.host, plan.backend))
    if plan.config_note:
        print('(%s)' % plan.config_note)
    for gpu in plan.assignment.gpus:
        print('  %s serves %s (%s): %d vGPU(s), %d in use' % (
            gpu.gpu.address, gpu.type_id, gpu.type_name, gpu.capacity,
            gpu.used))
    for problem in plan.assignment.problems:
        print('  %s: %s' % (problem.severity.upper(), problem))

    with placement_server.EmbeddedPlacement() as server:
        _say('Embedded Placement at %s (SQLite in %s)' % (
            server.endpoint, server.workdir))
        client = placement.PlacementClient.for_endpoint(server.endpoint)
        root = client.create_provider(plan.host)
        client.set_inventories(root['uuid'], root['generation'], {
            rc: {'total': n} for rc, n in ROOT_INVENTORY.items()})
        print('  compute node provider %s (%s)' % (plan.host, root['uuid']))

        publisher = publish.TreePublisher(client, plan.host)
        first = publisher.sync(plan.assignment)
        again = publisher.sync(plan.assignment)
        _say('Wrote the GPU providers')
        print('  first sync: %d providers created in %d requests; an '
              'unchanged periodic sync: %d request(s)' % (
                  len(first.created), first.requests, again.requests))
        for problem in first.desired.problems:
            print('  NOTE: %s' % problem)

        _say('Providers as Placement holds them')
        rows = []
        for provider in client.providers_in_tree(root['uuid']):
            if provider['uuid'] == root['uuid']:
                continue
            inv = client.inventories(provider['uuid'])['inventories']
            traits = client.traits(provider['uuid'])['traits']
            for rc, body in sorted(inv.items()):
                rows.append([provider['name'], provider['uuid'], rc,
                             str(body['total']), str(body['max_unit']),
                             ' '.join(sorted(
                                 t for t in traits if t.startswith(
                                     os_traits.CUSTOM_NAMESPACE)))])
        print(common.format_table(
            ['NAME', 'UUID', 'CLASS', 'TOTAL', 'MAX_UNIT', 'TRAITS'], rows))

        names = {p.uuid: p.name for p in first.desired.providers}
        classes = sorted({p.resource_class for p in first.desired.providers})
        for rc in classes:
            _show_candidates(client, names, 'resources=%s:1' % rc)
        if first.desired.providers:
            # Pin the type of the last GPU by its name trait.
            pinned = first.desired.providers[-1]
            trait = next(t for t in pinned.traits
                         if t.startswith(os_traits.CUSTOM_NAMESPACE)
                         and t != inventory.id_trait(pinned.mdev_type))
            _show_candidates(client, names, 'resources=%s:1&required=%s' % (
                pinned.resource_class, trait))

        _say('Audit')
        result = audit_mod.audit(client, plan.host, plan.assignment)
        print('  ' + audit_cmd.render(result).replace('\n', '\n  '))
    _show_licensing(plan)
    return 1 if result.drift else 0


def _show_licensing(plan) -> None:
    settings = licensing.load(common.CONF, plan.device_config)
    note = ''
    if not settings.enabled:
        # Show the path with a stand-in token when none is configured.
        settings = vendor_types.LicensingSettings(
            enabled=True, token=vendor_types.Secret(DEMO_TOKEN))
        note = (' (a demo token: set [vgpu_licensing] enabled and '
                'client_config_token_file for yours)')
    type_id = plan.assignment.gpus[0].type_id if plan.assignment.gpus \
        else None
    _say('What a Linux guest holding %s receives%s' % (type_id or 'a vGPU',
                                                       note))
    license_cmd.print_guest(
        licensing_render.guest_licensing(settings, type_id), indent='  ')


def _show_candidates(client, names: dict, query: str) -> None:
    found = client.allocation_candidates(query + '&limit=1000')
    per_provider = collections.Counter()
    for request in found['allocation_requests']:
        for rp_uuid in request['allocations']:
            if rp_uuid in names:
                per_provider[names[rp_uuid]] += 1
    _say('GET /allocation_candidates?%s' % query)
    print('  %d candidate(s) on %s' % (
        len(found['allocation_requests']),
        ', '.join(sorted(per_provider)) or 'no provider'))
