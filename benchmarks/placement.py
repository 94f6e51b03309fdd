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
"""Placement cost of a GPU host: Nova's in-tree layout against this one.

One run, one local Placement (the real openstack-placement, SQLite, on
127.0.0.1). Prints:

1. request counts and wall time of a first sync, an unchanged periodic
   sync and a restart, for an 8-GPU V100 host and an A100 host with 4 GPUs
   x 16 VFs, in Nova's in-tree layout (one provider per mdev parent: per
   GPU, or per VF for SR-IOV) and in this project's (one provider per
   GPU). With the nova package installed, both go through Nova's own
   report client (SchedulerReportClient.update_from_provider_tree with the
   resource tracker's calls around it); this project's own publisher (the
   demo's path) is measured too;
2. the latency of GET /allocation_candidates?resources=VGPU:1 with 50
   A100 compute nodes in each layout, and the ratio.

Run: python benchmarks/placement.py [--nodes 50] [--repeat 15]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid

from keystoneauth1 import adapter as ks_adapter
from keystoneauth1 import loading as ks_loading
from keystoneauth1 import session as ks_session

from tests import configs
from vgpu_nova_ext.host import simulated
from vgpu_nova_ext import inventory
from vgpu_nova_ext import mapping
from vgpu_nova_ext.placement import client as placement
from vgpu_nova_ext.placement import embedded as placement_server
from vgpu_nova_ext.placement import publish
from vgpu_nova_ext import reshape

ROOT_INVENTORY = {'VCPU': {'total': 64}, 'MEMORY_MB': {'total': 524288},
                  'DISK_GB': {'total': 2000}}
SYNCS = (('first sync', None), ('periodic sync', None),
         ('periodic, refresh due', 'refresh'), ('restart', 'restart'))
HOSTS = (('8 x V100', 'v100x8',
          '[devices]\nenabled_mdev_types = nvidia-197\n'),
         ('4 x A100, 16 VFs each', 'a100-sriov',
          '[devices]\nenabled_mdev_types = nvidia-471\n'))


def plan(profile: str, config: str) -> mapping.Assignment:
    prof = simulated.load_profile(profile)
    # No existing devices: both layouts start from the same empty host.
    prof = simulated.Profile(name=prof.name, description=prof.description,
                             gpus=prof.gpus)
    backend = simulated.SimulatedBackend(prof)
    try:
        with tempfile.NamedTemporaryFile('w', suffix='.conf') as f:
            f.write(config)
            f.flush()
            return mapping.assign(configs.device_config([f.name]),
                                  backend.scan())
    finally:
        backend.close()


def nova_layout(host: str, assignment: mapping.Assignment) -> list[tuple]:
    """(name, {rc: inventory}, traits) as Nova's in-tree support has them.

    A provider per mdev parent, max_unit = total, no traits.
    """
    out = []
    for gpu in assignment.gpus:
        per_parent = {}
        for parent in gpu.gpu.parents:
            vgpu_type = parent.type(gpu.type_id)
            if vgpu_type and vgpu_type.available_instances:
                per_parent[parent.name] = vgpu_type.available_instances
        for name, total in sorted(per_parent.items()):
            out.append(('%s_%s' % (host, name), {gpu.resource_class: {
                'total': total, 'max_unit': total, 'min_unit': 1,
                'step_size': 1, 'reserved': 0, 'allocation_ratio': 1.0}},
                ()))
    return out


def project_layout(host: str, assignment: mapping.Assignment) -> list[tuple]:
    tree = inventory.provider_tree(host, assignment)
    return [(p.name, {p.resource_class: reshape.inventory_body(p.inventory)},
             p.traits) for p in tree.providers]


class CountingAdapter(ks_adapter.Adapter):
    requests = 0

    def request(self, *args, **kwargs):
        CountingAdapter.requests += 1
        return super().request(*args, **kwargs)


def noauth_session(endpoint: str) -> ks_session.Session:
    auth = ks_loading.get_plugin_loader('admin_token').load_from_options(
        endpoint=endpoint, token='admin')
    return ks_session.Session(auth=auth, additional_headers={
        'X-Roles': placement.NOAUTH_ROLES})


def nova_report_client_syncs(endpoint: str, host: str,
                             layout: list[tuple]) -> list[tuple]:
    """First, periodic, restart through Nova's report client."""
    from nova import context as nova_context
    from nova.scheduler.client import report

    ctx = nova_context.get_admin_context()
    root_uuid = str(uuid.uuid4())

    def resource_tracker_update(client):
        # As ResourceTracker._update_to_placement does it.
        tree = client.get_provider_tree_and_ensure_root(ctx, root_uuid,
                                                        name=host)
        tree.update_inventory(root_uuid, ROOT_INVENTORY)
        for name, inventories, traits in layout:
            if not tree.exists(name):
                tree.new_child(name, root_uuid,
                               uuid=inventory.provider_uuid(name))
            tree.update_inventory(name, inventories)
            tree.update_traits(name, traits)
        client.update_from_provider_tree(ctx, tree)

    def new_client():
        return report.SchedulerReportClient(adapter=CountingAdapter(
            noauth_session(endpoint), service_type='placement'))

    results = []
    client = new_client()
    for label, fresh in SYNCS:
        if fresh == 'restart':
            client = new_client()
        elif fresh == 'refresh':
            # What [compute] resource_provider_association_refresh (300 s
            # by default) brings about on a periodic run.
            client._association_refresh_time.clear()
        before = CountingAdapter.requests
        start = time.perf_counter()
        resource_tracker_update(client)
        results.append((label, CountingAdapter.requests - before,
                        time.perf_counter() - start))
    return results


def publisher_syncs(endpoint: str, host: str,
                    assignment: mapping.Assignment) -> list[tuple]:
    client = placement.PlacementClient.for_endpoint(endpoint)
    root = client.create_provider(host)
    client.set_inventories(root['uuid'], root['generation'], ROOT_INVENTORY)
    results = []
    publisher = publish.TreePublisher(client, host)
    for label, fresh in SYNCS:
        if fresh == 'restart':
            publisher = publish.TreePublisher(client, host)
        start = time.perf_counter()
        result = publisher.sync(assignment)
        results.append((label, result.requests,
                        time.perf_counter() - start))
    return results


def fill(client: placement.PlacementClient, nodes: int,
         layout_of) -> None:
    """Make ``nodes`` compute nodes with the GPU providers of a layout.

    Written directly: a create per provider, one reshaper per node.
    """
    for index in range(nodes):
        host = 'node%03d' % index
        root = client.create_provider(host)
        client.set_inventories(root['uuid'], root['generation'],
                               ROOT_INVENTORY)
        inventories = {}
        for name, invs, traits in layout_of(host):
            made = client.create_provider(name, inventory.provider_uuid(name),
                                          root['uuid'])
            inventories[made['uuid']] = {
                'resource_provider_generation': made['generation'],
                'inventories': invs}
        client.reshape(inventories, {})


def candidates_latency(endpoint: str, repeat: int) -> tuple[float, int]:
    client = placement.PlacementClient.for_endpoint(endpoint)
    query = 'resources=VGPU:1&limit=1000'
    found = client.allocation_candidates(query)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        client.allocation_candidates(query)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), len(found['allocation_requests'])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--nodes', type=int, default=50)
    parser.add_argument('--repeat', type=int, default=15)
    args = parser.parse_args()
    try:
        import nova.scheduler.client.report  # noqa: F401
        have_nova = True
    except ImportError:
        have_nova = False
    print('Placement benchmark (openstack-placement on 127.0.0.1, SQLite)')
    print('Nova report client: %s' % (
        'nova ' + _nova_version() if have_nova else
        'not installed (pip install nova): only the publisher is measured'))

    print('\n1. Requests (wall ms) per sync')
    header = ['host', 'sync', 'nova layout, nova client',
              'this layout, nova client', 'this layout, publisher']
    rows = []
    for title, profile, config in HOSTS:
        assignment = plan(profile, config)
        with placement_server.EmbeddedPlacement() as server:
            nova_runs = project = [('-', None, 0.0)] * len(SYNCS)
            if have_nova:
                nova_runs = nova_report_client_syncs(
                    server.endpoint, 'nova-' + profile,
                    nova_layout('nova-' + profile, assignment))
                project = nova_report_client_syncs(
                    server.endpoint, 'ext-' + profile,
                    project_layout('ext-' + profile, assignment))
            ours = publisher_syncs(server.endpoint, 'pub-' + profile,
                                   assignment)
        for i, (label, _) in enumerate(SYNCS):
            rows.append([title, label] + [_cell(r[i]) for r in (
                nova_runs, project, ours)] + [_ratio(nova_runs[i], ours[i])])
    _table(header + ['requests: nova layout / publisher'], rows)

    print('\n2. GET /allocation_candidates?resources=VGPU:1 with %d A100 '
          'compute nodes (4 GPUs x 16 VFs each), median of %d' % (
              args.nodes, args.repeat))
    a100 = plan('a100-sriov', HOSTS[1][2])
    figures = {}
    for label, layout_of in (
            ('nova layout (a provider per VF)',
             lambda host: nova_layout(host, a100)),
            ('this layout (a provider per GPU)',
             lambda host: project_layout(host, a100))):
        with placement_server.EmbeddedPlacement() as server:
            client = placement.PlacementClient.for_endpoint(server.endpoint)
            start = time.perf_counter()
            fill(client, args.nodes, layout_of)
            latency, count = candidates_latency(server.endpoint, args.repeat)
            figures[label] = latency
            print('  %-34s %7.1f ms  (%d candidates; filled in %.1f s)' % (
                label, latency * 1000, count, time.perf_counter() - start))
    nova_ms, ours_ms = figures.values()
    print('  ratio nova/this: %.1fx' % (nova_ms / ours_ms))
    return 0


def _cell(result: tuple) -> str:
    label, requests, wall = result
    if requests is None:
        return '-'
    return '%d (%.0f ms)' % (requests, wall * 1000)


def _ratio(nova: tuple, ours: tuple) -> str:
    if nova[1] is None or not ours[1]:
        return '-'
    return '%.1fx' % (nova[1] / ours[1])


def _table(header, rows) -> None:
    widths = [max(len(str(r[i])) for r in [header] + rows)
              for i in range(len(header))]
    for row in [header] + rows:
        print('  ' + '  '.join(str(c).ljust(w) for c, w in zip(row, widths)))


def _nova_version() -> str:
    try:
        from importlib import metadata
        return metadata.version('nova')
    except Exception:
        return '(unknown version)'


if __name__ == '__main__':
    sys.path.insert(0, os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    sys.exit(main())
