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
"""Functional tests: a real Placement on 127.0.0.1, reached over HTTP."""

import os
import tempfile

import fixtures

from tests import configs
from tests import timeout
from vgpu_nova_ext.host import simulated
from vgpu_nova_ext.host import sysfs
from vgpu_nova_ext import mapping
from vgpu_nova_ext.placement import client as placement
from vgpu_nova_ext.placement import embedded as placement_server
from vgpu_nova_ext.placement import publish

HOST = 'cn1'


class PlacementFixture(fixtures.Fixture):
    """The openstack-placement package, SQLite, noauth2, 127.0.0.1."""

    def _setUp(self):
        self.server = placement_server.EmbeddedPlacement()
        self.addCleanup(self.server.cleanup)
        self.endpoint = self.server.start()
        self.client = placement.PlacementClient.for_endpoint(self.endpoint)


class TestCase(timeout.TestCase):

    def setUp(self):
        super().setUp()
        self.placement = self.useFixture(PlacementFixture())
        self.client = self.placement.client
        self.tmp = self.useFixture(fixtures.TempDir()).path

    def assignment(self, profile: str, config: str | None = None,
                   devices=None) -> mapping.Assignment:
        """Plan a simulated host, optionally with other devices on it."""
        prof = simulated.load_profile(profile)
        root = tempfile.mkdtemp(dir=self.tmp)
        simulated.lay_out(prof, root, devices)
        snapshot = sysfs.SysfsReader(root).scan()
        path = os.path.join(root, 'nova.conf')
        with open(path, 'w') as f:
            f.write(config if config is not None else prof.example_config)
        return mapping.assign(configs.device_config([path]),
                              snapshot)

    def compute_node(self, name: str = HOST) -> dict:
        return self.client.create_provider(name)

    def publisher(self, host: str = HOST) -> publish.TreePublisher:
        return publish.TreePublisher(self.client, host)

    def tree(self, root_uuid: str) -> dict:
        """{name: (parent, {rc: total}, sorted traits)} as Placement has."""
        out = {}
        for p in self.client.providers_in_tree(root_uuid):
            if p['uuid'] == root_uuid:
                continue
            inv = self.client.inventories(p['uuid'])['inventories']
            out[p['name']] = (
                p['parent_provider_uuid'],
                {rc: body['total'] for rc, body in inv.items()},
                sorted(self.client.traits(p['uuid'])['traits']))
        return out

    def allocate(self, consumer: str, allocations: dict,
                 project: str = 'p1', user: str = 'u1') -> None:
        self.client.put_allocations(consumer, {
            'allocations': {rp: {'resources': res}
                            for rp, res in allocations.items()},
            'project_id': project, 'user_id': user,
            'consumer_generation': None, 'consumer_type': 'INSTANCE'})

    def allocations(self, consumer: str) -> dict:
        found = self.client.allocations(consumer)['allocations']
        return {rp: body['resources'] for rp, body in found.items()}
