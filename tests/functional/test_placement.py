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
"""The provider tree, publishing, audit and reshape against Placement."""

import uuid

from tests.functional import base
from vgpu_nova_ext.host import model
from vgpu_nova_ext.host import simulated
from vgpu_nova_ext import inventory
from vgpu_nova_ext.placement import audit
from vgpu_nova_ext.placement import client as placement
from vgpu_nova_ext import reshape

HOST = base.HOST


def device(parent: str, type_id: str, n: int = 0) -> model.MediatedDevice:
    return model.MediatedDevice(str(uuid.UUID(int=n + 1)), parent, type_id)


class TestPublish(base.TestCase):

    def test_tree_for_every_builtin_profile(self):
        for name in simulated.builtin_profiles():
            host = 'host-%s' % name
            root = self.compute_node(host)
            plan = self.assignment(name)
            result = self.publisher(host).sync(plan)
            expected = inventory.provider_tree(host, plan)
            self.assertEqual(expected, result.desired, name)
            self.assertEqual(
                {p.name: (root['uuid'], {p.resource_class: p.total},
                          sorted(p.traits)) for p in expected.providers},
                self.tree(root['uuid']), name)
            for spec in expected.providers:
                inv = self.client.inventories(spec.uuid)['inventories']
                self.assertEqual(reshape.inventory_body(spec.inventory),
                                 {k: inv[spec.resource_class][k] for k in
                                  reshape.inventory_body(spec.inventory)})
            found = audit.audit(self.client, host, plan)
            self.assertEqual((), found.drift, name)

    def test_periodic_sync_of_an_unchanged_tree_is_one_read(self):
        self.compute_node()
        plan = self.assignment('v100x8')
        publisher = self.publisher()
        first = publisher.sync(plan)
        self.assertEqual(8, len(first.created))
        again = publisher.sync(plan)
        self.assertEqual(1, again.requests)
        self.assertEqual((), again.created + again.updated + again.deleted)
        # A restarted service reads but writes nothing.
        restarted = self.publisher().sync(plan)
        self.assertEqual((), restarted.created + restarted.updated)

    def test_gpu_gains_and_loses_capacity(self):
        root = self.compute_node()
        publisher = self.publisher()
        publisher.sync(self.assignment('m60'))
        name = '%s_pci_0000_84_00_0' % HOST
        self.assertEqual({'VGPU': 4}, self.tree(root['uuid'])[name][1])
        # Another tool took the GPU with an 8Q: nothing of 2Q is left.
        taken = (device('pci_0000_84_00_0', 'nvidia-22'),)
        publisher.sync(self.assignment('m60', devices=taken))
        self.assertNotIn(name, self.tree(root['uuid']))
        # It is freed: the provider comes back with the same UUID.
        result = publisher.sync(self.assignment('m60'))
        self.assertIn(name, result.created)
        self.assertEqual(inventory.provider_uuid(name),
                         self.client.provider_by_name(name)['uuid'])
        self.assertEqual({'VGPU': 4}, self.tree(root['uuid'])[name][1])

    def test_zero_capacity_keeps_total_at_allocations(self):
        root = self.compute_node()
        publisher = self.publisher()
        publisher.sync(self.assignment('m60'))
        rp = inventory.provider_uuid('%s_pci_0000_84_00_0' % HOST)
        for _ in range(2):
            self.allocate(str(uuid.uuid4()), {rp: {'VGPU': 1}})
        taken = (device('pci_0000_84_00_0', 'nvidia-22'),)
        result = publisher.sync(self.assignment('m60', devices=taken))
        self.assertEqual({'VGPU': 2}, self.tree(root['uuid'])[
            '%s_pci_0000_84_00_0' % HOST][1])
        self.assertIn('2 VGPU allocated', result.desired.problems[0])

    def test_provider_made_by_nova_is_adopted_by_name(self):
        root = self.compute_node()
        name = '%s_pci_0000_84_00_0' % HOST
        novas = self.client.create_provider(name, str(uuid.uuid4()),
                                            root['uuid'])
        self.client.set_inventories(novas['uuid'], novas['generation'],
                                    {'VGPU': {'total': 16}})
        consumer = str(uuid.uuid4())
        self.allocate(consumer, {novas['uuid']: {'VGPU': 1}})
        result = self.publisher().sync(self.assignment('m60'))
        self.assertNotIn(name, result.created)
        spec = result.desired.by_name()[name]
        self.assertEqual(novas['uuid'], spec.uuid)
        self.assertEqual({novas['uuid']: {'VGPU': 1}},
                         self.allocations(consumer))
        self.assertEqual((4, ['CUSTOM_VGPU_M60_2Q', 'CUSTOM_VGPU_NVIDIA_18',
                              'OWNER_NOVA']),
                         (self.tree(root['uuid'])[name][1]['VGPU'],
                          self.tree(root['uuid'])[name][2]))

    def test_custom_resource_class(self):
        root = self.compute_node()
        config = ('[devices]\nenabled_mdev_types = nvidia-18\n'
                  '[mdev_nvidia-18]\nmdev_class = CUSTOM_M60_2Q\n')
        self.publisher().sync(self.assignment('m60', config))
        tree = self.tree(root['uuid'])
        self.assertEqual({'CUSTOM_M60_2Q': 4},
                         tree['%s_pci_0000_84_00_0' % HOST][1])
        found = self.client.allocation_candidates(
            'resources=CUSTOM_M60_2Q:1')
        self.assertEqual(2, len(found['allocation_requests']))

    def test_unknown_compute_node(self):
        exc = self.assertRaises(placement.PlacementError,
                                self.publisher('nope').sync,
                                self.assignment('m60'))
        self.assertIn("'nope'", str(exc))

    def test_generation_conflict_is_retried(self):
        self.compute_node()
        plan = self.assignment('m60')
        publisher = self.publisher()
        publisher.sync(plan)
        name = '%s_pci_0000_84_00_0' % HOST
        rp = inventory.provider_uuid(name)
        other = placement.PlacementClient.for_endpoint(
            self.placement.endpoint)
        # Between our read and our write, someone else sets a trait.
        state = {'done': False}

        def meddle(method, url):
            if method == 'PUT' and url.endswith('/traits') and \
                    not state['done']:
                state['done'] = True
                gen = other.traits(rp)['resource_provider_generation']
                other.ensure_trait('CUSTOM_MEDDLE')
                other.set_traits(rp, gen, ['CUSTOM_MEDDLE'])

        self.client.set_traits(rp, self.client.traits(rp)[
            'resource_provider_generation'], ['OWNER_NOVA'])
        self.client.on_request = meddle
        publisher._cache = None
        publisher.sync(plan)
        self.assertTrue(state['done'])
        # Retried on the new generation: this project's traits set, the
        # other writer's kept (a trait of someone else's is not ours).
        self.assertEqual(['CUSTOM_MEDDLE', 'CUSTOM_VGPU_M60_2Q',
                          'CUSTOM_VGPU_NVIDIA_18', 'OWNER_NOVA'],
                         sorted(self.client.traits(rp)['traits']))


class TestPlacementOutage(base.TestCase):

    def test_stopped_in_the_middle_of_a_write_then_restarted(self):
        root = self.compute_node()
        plan = self.assignment('v100x8')
        publisher = self.publisher()
        calls = {'n': 0}

        def stop_after_some_writes(method, url):
            if method == 'POST' and url == '/resource_providers':
                calls['n'] += 1
                if calls['n'] == 4:
                    self.placement.server.stop()

        self.client.on_request = stop_after_some_writes
        exc = self.assertRaises(placement.PlacementUnavailable,
                                publisher.sync, plan)
        self.assertIn('unreachable', str(exc))
        self.client.on_request = None
        self.placement.server.restart()
        result = publisher.sync(plan)
        self.assertEqual(5, len(result.created))
        self.assertEqual(8, len(self.tree(root['uuid'])))
        self.assertEqual((), audit.audit(self.client, HOST, plan).drift)


class TestAudit(base.TestCase):

    def setUp(self):
        super().setUp()
        self.root = self.compute_node()
        self.plan = self.assignment('m60')
        self.publisher().sync(self.plan)
        self.rp84 = inventory.provider_uuid('%s_pci_0000_84_00_0' % HOST)
        self.rp85 = inventory.provider_uuid('%s_pci_0000_85_00_0' % HOST)

    def drift(self):
        return {(d.provider, d.kind): d for d in audit.audit(
            self.client, HOST, self.plan).drift}

    def test_no_drift_in_few_reads(self):
        result = audit.audit(self.client, HOST, self.plan)
        self.assertEqual((), result.drift)
        # Compute node by name, its tree, each provider's inventories and
        # each GPU provider's traits.
        self.assertEqual(2 + 3 + 2, result.reads)

    def test_missing(self):
        self.client.delete_provider(self.rp85)
        found = self.drift()
        self.assertEqual([('%s_pci_0000_85_00_0' % HOST, 'missing')],
                         list(found))
        self.assertIsNone(found[('%s_pci_0000_85_00_0' % HOST,
                                 'missing')].actual)

    def test_unexpected(self):
        extra = self.client.create_provider('%s_pci_0000_86_00_0' % HOST,
                                            parent_uuid=self.root['uuid'])
        self.client.set_inventories(extra['uuid'], extra['generation'],
                                    {'VGPU': {'total': 4}})
        found = self.drift()
        self.assertEqual([('%s_pci_0000_86_00_0' % HOST, 'unexpected')],
                         list(found))

    def test_vgpu_inventory_on_the_compute_node(self):
        self.client.set_inventories(self.root['uuid'], 0,
                                    {'VGPU': {'total': 8}})
        self.assertEqual([(HOST, 'inventory')], list(self.drift()))

    def test_inventory(self):
        gen = self.client.inventories(self.rp84)[
            'resource_provider_generation']
        self.client.set_inventories(self.rp84, gen, {'VGPU': {
            'total': 16, 'max_unit': 16}})
        found = self.drift()[('%s_pci_0000_84_00_0' % HOST, 'inventory')]
        self.assertEqual(4, found.expected['VGPU']['total'])
        self.assertEqual(16, found.actual['VGPU']['total'])

    def test_traits(self):
        gen = self.client.traits(self.rp84)['resource_provider_generation']
        self.client.set_traits(self.rp84, gen, ['OWNER_NOVA'])
        found = self.drift()[('%s_pci_0000_84_00_0' % HOST, 'traits')]
        self.assertEqual(['OWNER_NOVA'], found.actual)
        self.assertIn('CUSTOM_VGPU_M60_2Q', found.expected)

    def test_operator_trait_is_not_drift(self):
        # As Nova's vGPU guide has operators do: a trait of their own.
        body = self.client.traits(self.rp84)
        self.client.ensure_trait('CUSTOM_NVIDIA_18')
        self.client.set_traits(self.rp84, body['resource_provider_generation'],
                               body['traits'] + ['CUSTOM_NVIDIA_18'])
        self.assertNotIn(('%s_pci_0000_84_00_0' % HOST, 'traits'),
                         self.drift())

    def test_parent(self):
        self.client.delete_provider(self.rp85)
        other = self.compute_node('cn2')
        self.client.create_provider('%s_pci_0000_85_00_0' % HOST,
                                    parent_uuid=other['uuid'])
        found = self.drift()
        self.assertEqual([('%s_pci_0000_85_00_0' % HOST, 'parent')],
                         list(found))
        self.assertEqual(other['uuid'], found[(
            '%s_pci_0000_85_00_0' % HOST, 'parent')].actual)


class TestReshape(base.TestCase):
    """From Nova's in-tree layouts, allocations in place."""

    def _consumers(self, n: int) -> list[str]:
        return [str(uuid.UUID(int=1000 + i)) for i in range(n)]

    def test_from_vgpu_on_the_compute_node(self):
        root = self.compute_node()
        self.client.set_inventories(root['uuid'], root['generation'], {
            'VCPU': {'total': 64}, 'MEMORY_MB': {'total': 65536},
            'VGPU': {'total': 8}})
        consumers = self._consumers(3)
        for consumer in consumers:
            self.allocate(consumer, {root['uuid']: {
                'VCPU': 2, 'MEMORY_MB': 2048, 'VGPU': 1}})
        # Their devices, as the host has them: two on 84, one on 85.
        devices = (device('pci_0000_84_00_0', 'nvidia-18', 0),
                   device('pci_0000_84_00_0', 'nvidia-18', 1),
                   device('pci_0000_85_00_0', 'nvidia-22', 2))
        before = {c: self.allocations(c) for c in consumers}
        plan = self.assignment('m60', devices=devices)
        gpus = {consumers[0]: ['%s_pci_0000_84_00_0' % HOST],
                consumers[1]: ['%s_pci_0000_84_00_0' % HOST],
                consumers[2]: ['%s_pci_0000_85_00_0' % HOST]}
        result = self.publisher().sync(plan, device_gpus=gpus)
        self.assertEqual(sorted(consumers), sorted(result.reshaped))
        rp84 = inventory.provider_uuid('%s_pci_0000_84_00_0' % HOST)
        rp85 = inventory.provider_uuid('%s_pci_0000_85_00_0' % HOST)
        for consumer, gpu in zip(consumers, (rp84, rp84, rp85)):
            after = self.allocations(consumer)
            self.assertEqual({root['uuid']: {'VCPU': 2, 'MEMORY_MB': 2048},
                              gpu: {'VGPU': 1}}, after)
            # Nothing lost: the same resources, VGPU moved.
            self.assertEqual(_sum(before[consumer]), _sum(after))
        root_inv = self.client.inventories(root['uuid'])['inventories']
        self.assertEqual({'VCPU', 'MEMORY_MB'}, set(root_inv))
        self.assertEqual((), audit.audit(self.client, HOST, plan).drift)

    def test_from_one_provider_per_vf(self):
        root = self.compute_node()
        vf_providers = {}
        for gpu in ('41', '61'):
            for fn in (4, 5):
                name = '%s_pci_0000_%s_00_%d' % (HOST, gpu, fn)
                made = self.client.create_provider(name, str(uuid.uuid4()),
                                                   root['uuid'])
                self.client.set_inventories(made['uuid'], made['generation'],
                                            {'VGPU': {'total': 1}})
                vf_providers[name] = made['uuid']
        consumers = self._consumers(3)
        placed = [('41', 4), ('41', 5), ('61', 4)]
        for consumer, (gpu, fn) in zip(consumers, placed):
            self.allocate(consumer, {vf_providers[
                '%s_pci_0000_%s_00_%d' % (HOST, gpu, fn)]: {'VGPU': 1}})
        before = {c: self.allocations(c) for c in consumers}
        devices = tuple(device('pci_0000_%s_00_%d' % (gpu, fn), 'nvidia-471',
                               i) for i, (gpu, fn) in enumerate(placed))
        plan = self.assignment('a100-sriov', devices=devices)
        gpus = {c: ['%s_pci_0000_%s_00_0' % (HOST, gpu)]
                for c, (gpu, _) in zip(consumers, placed)}
        result = self.publisher().sync(plan, device_gpus=gpus)
        self.assertEqual(sorted(consumers), sorted(result.reshaped))
        for consumer, (gpu, _) in zip(consumers, placed):
            after = self.allocations(consumer)
            pf = inventory.provider_uuid('%s_pci_0000_%s_00_0' % (HOST, gpu))
            self.assertEqual({pf: {'VGPU': 1}}, after)
            self.assertEqual(_sum(before[consumer]), _sum(after))
        tree = self.tree(root['uuid'])
        for name in vf_providers:
            self.assertNotIn(name, tree)
        usage = self.client.usages(inventory.provider_uuid(
            '%s_pci_0000_41_00_0' % HOST))
        self.assertEqual({'VGPU': 2}, usage)
        self.assertEqual((), audit.audit(self.client, HOST, plan).drift)

    def test_unknown_device_changes_nothing(self):
        root = self.compute_node()
        self.client.set_inventories(root['uuid'], root['generation'], {
            'VGPU': {'total': 8}})
        consumer = self._consumers(1)[0]
        self.allocate(consumer, {root['uuid']: {'VGPU': 1}})
        exc = self.assertRaises(reshape.ReshapeError,
                                self.publisher().sync,
                                self.assignment('m60'), device_gpus={})
        self.assertIn(consumer, str(exc))
        self.assertEqual({root['uuid']: {'VGPU': 1}},
                         self.allocations(consumer))
        self.assertEqual({'VGPU'}, set(self.client.inventories(
            root['uuid'])['inventories']))


def _sum(allocations: dict) -> dict:
    total = {}
    for resources in allocations.values():
        for rc, n in resources.items():
            total[rc] = total.get(rc, 0) + n
    return total
