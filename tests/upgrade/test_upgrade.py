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
"""A compute node upgraded from Nova 33 to Nova 34, with vGPU servers.

Two phases, each in the environment of its release (``tox -e
nova-upgrade`` runs both, in order):

1. ``TestBefore`` (Nova 33, eventlet, its default): Nova's functional
   harness boots vGPU servers through the API on the driver, then writes
   what an upgrade carries over to ``$VGPU_NOVA_EXT_UPGRADE_DIR``: the
   state directory (ledger and simulated host), each guest's domain XML,
   and Placement's picture of the host (providers, UUIDs, inventories,
   traits, the servers' allocations).
2. ``TestAfter`` (Nova 34, native threads, its default): Nova 34's driver
   class made as nova-compute makes it, on a fake libvirt holding those
   domains, the state directory and a provider tree as Nova's report
   client reads it back from Placement; it does what nova-compute's start
   does for vGPUs (the reconcile of init_host, the provider tree update).
   Afterwards: the same providers with the same UUIDs and inventories,
   the traits plus ``OWNER_NOVA``, no reshape, the same ledger, devices and
   guests, and every allocation on a provider that still holds it.

Nova's databases do not survive a process, so the servers themselves are
not carried over; everything this project keeps is.
"""

import json
import os
import shutil

import fixtures

from tests import timeout

UPGRADE_DIR = 'VGPU_NOVA_EXT_UPGRADE_DIR'
HOST = 'host1'


def _dir(test) -> str:
    path = os.environ.get(UPGRADE_DIR)
    if not path:
        test.fail('%s is not set: run the two phases with tox -e '
                  'nova-upgrade' % UPGRADE_DIR)
    return path


def _ledger_rows(state_dir: str) -> list[list]:
    from vgpu_nova_ext.devices import ledger as ledger_mod
    ledger = ledger_mod.Ledger(state_dir)
    try:
        return sorted([e.device_id, e.consumer, e.state, e.gpu, e.type_id]
                      for e in ledger.all())
    finally:
        ledger.close()


try:
    from tests.nova import test_driver
except ImportError:  # no nova: neither phase can run
    test_driver = None


if test_driver is not None:

    class TestBefore(test_driver.DriverTestBase):
        """Phase one: vGPU servers on the release upgraded from."""

        # Volta: two vGPUs of a Q type may share a guest (NVIDIA).
        profile = 'v100x8'
        enabled_types = 'nvidia-197'

        def test_export(self):
            out = _dir(self)
            compute = self.start_vgpu_compute(HOST)
            one = self.small_vgpu_flavor()
            two = self._create_flavor(extra_spec={
                'resources1:VGPU': '1', 'resources2:VGPU': '1',
                'group_policy': 'isolate'})
            servers = [self._create_server(
                image_uuid=test_driver.IMAGE, flavor_id=flavor,
                networks='none', expected_state='ACTIVE')
                for flavor in (one, one, two, one)]
            self._delete_server(servers.pop())
            root = self.compute_rp_uuids[HOST]
            providers = []
            for rp in self.placement.get(
                    '/resource_providers?in_tree=%s' % root,
                    version='1.14').body['resource_providers']:
                providers.append({
                    'uuid': rp['uuid'], 'name': rp['name'],
                    'parent': rp['parent_provider_uuid'],
                    'inventories': self._get_provider_inventory(rp['uuid']),
                    'traits': sorted(self._get_provider_traits(rp['uuid']))})
            driver = compute.driver
            picture = {
                'nova': test_driver.compat.nova_version(),
                'profile': self.profile, 'enabled_types': self.enabled_types,
                'providers': providers,
                'allocations': {
                    s['id']: {rp: a['resources'] for rp, a in
                              self._get_allocations_by_server_uuid(
                                  s['id']).items()} for s in servers},
                'domains': {g.uuid: g.get_xml_desc()
                            for g in driver._host.list_guests()},
                'ledger': _ledger_rows(driver._vgpu_ext().state_path),
                'devices': sorted(d.device_id
                                  for d in self.host_devices(compute)),
            }
            if os.path.exists(out):
                shutil.rmtree(out)
            # The simulated sysfs is links (as the kernel's): kept as links.
            shutil.copytree(driver._vgpu_ext().state_path,
                            os.path.join(out, 'state', HOST), symlinks=True)
            with open(os.path.join(out, 'before.json'), 'w') as f:
                json.dump(picture, f, indent=1, sort_keys=True)
            # Four vGPUs held by the three servers (the profile's own
            # unused device of the type may sit in the ledger as free).
            self.assertEqual(4, len([row for row in picture['ledger']
                                     if row[1] is not None]))


class TestAfter(timeout.TestCase):
    """Phase two: the same host on the release upgraded to."""

    def test_start_after_the_upgrade(self):
        source = _dir(self)
        with open(os.path.join(source, 'before.json')) as f:
            before = json.load(f)
        from nova.tests.fixtures import libvirt as fakelibvirt

        from tests.nova import standalone
        from vgpu_nova_ext.nova import compat
        from vgpu_nova_ext.nova import driver as vgpu_driver

        self.assertNotEqual(before['nova'].split('.')[0],
                            compat.nova_version().split('.')[0])
        state = self.useFixture(fixtures.TempDir()).path
        shutil.copytree(os.path.join(source, 'state'), state,
                        symlinks=True, dirs_exist_ok=True)
        standalone.configure(
            DEFAULT={'host': HOST},
            devices={'enabled_mdev_types': before['enabled_types'].split(
                ',')},
            vgpu_nova_ext={'host_backend': 'simulated',
                           'simulated_profile': before['profile'],
                           'state_path': state})
        self.addCleanup(standalone.CONF.reset)
        connection = fakelibvirt.Connection('qemu:///system', False,
                                            hostname=HOST)
        for xml in before['domains'].values():
            connection.defineXML(xml).create()
        # Placement's picture, as Nova's report client reads it at start.
        (root,) = [p for p in before['providers'] if p['parent'] is None]
        tree = standalone.tree(root['name'], root['uuid'])
        for p in before['providers']:
            if p is not root:
                tree.new_child(p['name'], root['uuid'], uuid=p['uuid'])
            tree.update_inventory(p['uuid'], p['inventories'])
            tree.update_traits(p['uuid'], p['traits'])

        with standalone.fake_libvirt():
            driver = standalone.driver(vgpu_driver.LibvirtVGPUDriver,
                                       connection)
            self.addCleanup(lambda: driver._vgpu_ext().devices.close())
            driver._reconcile_devices()                  # init_host's part
            driver._update_provider_tree_for_vgpu(tree, HOST)
            ext = driver._vgpu_ext()
            devices = sorted(d.device_id for d in
                             ext.backend.scan().mediated_devices)
            ledger = _ledger_rows(ext.state_path)
            domains = {g.uuid: g.get_xml_desc()
                       for g in driver._host.list_guests()}

        # No reshape, no provider made or lost, the UUIDs kept.
        self.assertEqual(
            sorted((p['name'], p['uuid']) for p in before['providers']),
            sorted((tree.data(u).name, tree.data(u).uuid)
                   for u in tree.get_provider_uuids()))
        owner = compat.features().owner_trait
        for p in before['providers']:
            data = tree.data(p['uuid'])
            if p is root:
                continue
            self.assertEqual(
                {rc: inv['total'] for rc, inv in p['inventories'].items()},
                {rc: inv['total'] for rc, inv in data.inventory.items()})
            expected = set(p['traits']) | ({'OWNER_NOVA'} if owner else set())
            self.assertEqual(expected, set(data.traits))
        # The same devices, owned by the same servers, in the same guests.
        self.assertEqual(before['devices'], devices)
        self.assertEqual(before['ledger'], ledger)
        self.assertEqual(before['domains'].keys(), domains.keys())
        # Every allocation is on a provider that still serves its class,
        # on the GPU the server's devices are on.
        gpu_of = {row[0]: row[3] for row in ledger}
        for server, allocations in before['allocations'].items():
            gpus = sorted(gpu_of[row[0]] for row in ledger
                          if row[1] == server)
            vgpu_rps = []
            for rp, resources in allocations.items():
                data = tree.data(rp)
                for rc, amount in resources.items():
                    if rp != root['uuid']:
                        self.assertGreaterEqual(
                            data.inventory[rc]['total'], amount)
                        vgpu_rps.append(data.name)
            self.assertEqual(gpus, sorted(n[len(HOST) + 1:]
                                          for n in vgpu_rps))
