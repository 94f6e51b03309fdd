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
"""Moves that fail or overlap, through Nova's API: no device is kept.

Nothing may wait for the orphan grace period: a guest that does not start
keeps nothing it claimed, a source host that comes back during an
evacuation frees what the evacuated guest held there, and a rebuild that
cannot claim its devices says so (ERROR) instead of showing a server
without a guest.
"""

import threading

import fixtures
from nova.compute import manager
from nova.tests.fixtures import libvirt as fakelibvirt
import os_resource_classes as orc

from tests.nova import test_driver
from tests.nova import waits

IMAGE = test_driver.IMAGE


def _guest_does_not_start(*args, **kwargs):
    # The failure libvirt gives when QEMU cannot start the guest (a vGPU
    # the host driver will not open, say). Nova's fake libvirt always
    # starts guests, so this one failure is made by hand.
    raise fakelibvirt.make_libvirtError(
        fakelibvirt.libvirtError,
        'internal error: qemu unexpectedly closed the monitor',
        error_code=fakelibvirt.VIR_ERR_INTERNAL_ERROR)


class FailedMovesBase(waits.PatientWaits, test_driver.DriverTestBase):

    # RPC casts stay casts, as in production: a compute's failure reaches
    # the server's state and fault, not the API caller, and a destination
    # can still be busy when the source comes back.
    CAST_AS_CALL = False

    def setUp(self):
        super().setUp()
        self.flavor = self.small_vgpu_flavor()

    def held(self, host) -> dict[str, str]:
        """{device: consumer} that the ledger of ``host`` gives someone."""
        return {e.device_id: e.consumer for e in
                self.computes[host].driver._vgpu_ext().ledger.all()
                if e.consumer is not None}

    def on_host(self, host) -> set[str]:
        return {d.device_id for d in self.host_devices(self.computes[host])}

    def vgpu_allocations(self, server) -> dict[str, int]:
        return {rp: a['resources'][orc.VGPU] for rp, a in
                self._get_allocations_by_server_uuid(server['id']).items()
                if orc.VGPU in a['resources']}

    def fail_guest_starts(self):
        self.useFixture(fixtures.MonkeyPatch(
            'nova.virt.libvirt.driver.LibvirtDriver.'
            '_create_guest_with_network', _guest_does_not_start))

    def host_down(self, host) -> dict:
        self.computes[host].stop()
        service = self.api.get_services(host=host,
                                        binary='nova-compute')[0]
        self.api.put_service(service['id'], {'forced_down': True})
        return service


class TestUnshelveFails(FailedMovesBase):

    def test_nothing_kept(self):
        self.start_vgpu_compute('host1')
        server = self._create_server(image_uuid=IMAGE, flavor_id=self.flavor,
                                     networks='none',
                                     expected_state='ACTIVE')
        baseline = self.on_host('host1') - set(self.held('host1'))
        self._shelve_server(server, 'SHELVED_OFFLOADED')
        self.fail_guest_starts()
        self.api.post_server_action(server['id'], {'unshelve': None})
        self._wait_for_instance_action_event(
            server, 'unshelve', 'compute_unshelve_instance', 'Error')
        server = self._wait_for_state_change(server, 'SHELVED_OFFLOADED')
        # Nova gave the allocations back without calling destroy: the
        # device claimed in spawn went with them, not after the grace.
        self.assertEqual({}, self.vgpu_allocations(server))
        self.assertEqual({}, self.held('host1'))
        self.assertEqual(baseline, self.on_host('host1'))


class EvacuationBase(FailedMovesBase):

    def setUp(self):
        super().setUp()
        for host in ('host1', 'host2'):
            self.start_vgpu_compute(host)
        self.server = self._create_server(
            image_uuid=IMAGE, flavor_id=self.flavor, networks='none',
            host='host1', expected_state='ACTIVE')
        self.baseline = {h: self.on_host(h) - set(self.held(h))
                         for h in ('host1', 'host2')}
        (self.device,) = self.held('host1')


class TestEvacuationSpawnFails(EvacuationBase):

    def test_destination_keeps_nothing(self):
        self.host_down('host1')
        self.fail_guest_starts()
        self.api.post_server_action(self.server['id'], {'evacuate': {}})
        self._wait_for_migration_status(self.server, ['failed'])
        self._wait_for_state_change(self.server, 'ERROR')
        # Nova removed the destination's allocations without a destroy.
        self.assertEqual({}, self.held('host2'))
        self.assertEqual(self.baseline['host2'], self.on_host('host2'))
        # The source's stay the instance's while it is down.
        self.assertEqual({self.device: self.server['id']},
                         self.held('host1'))


class TestSourceBackDuringEvacuation(EvacuationBase):
    """host1 comes back before the destination has begun the rebuild."""

    def test_source_frees_at_once(self):
        service = self.host_down('host1')
        arrived, gate = threading.Event(), threading.Event()
        rebuild = manager.ComputeManager.rebuild_instance

        def held_back(self, *args, **kwargs):
            # The destination is slow: the source comes back meanwhile.
            arrived.set()
            gate.wait(120)
            return rebuild(self, *args, **kwargs)

        self.useFixture(fixtures.MonkeyPatch(
            'nova.compute.manager.ComputeManager.rebuild_instance',
            held_back))
        # Also releases the destination, whatever the test does.
        self.addCleanup(gate.set)
        self.api.post_server_action(self.server['id'], {'evacuate': {}})
        # Scheduled (the conductor has claimed the destination's
        # allocations), not yet begun there.
        self.assertTrue(arrived.wait(60))
        self._wait_for_migration_status(self.server, ['accepted'])
        self.assertEqual(
            'rebuilding',
            self.api.get_server(self.server['id'])['OS-EXT-STS:task_state'])
        self.restart_compute_service('host1')
        # Nova destroyed the guest there at start (the evacuation still
        # under way, its task rebuilding as a rebuild's): the device is
        # freed now, not after the orphan grace period.
        self.assertEqual({}, self.held('host1'))
        self.assertEqual(self.baseline['host1'], self.on_host('host1'))
        self.api.put_service(service['id'], {'forced_down': False})
        gate.set()
        self._wait_for_migration_status(self.server, ['done'])
        server = self._wait_for_server_parameter(
            self.server, {'OS-EXT-SRV-ATTR:host': 'host2',
                          'status': 'SHUTOFF'})
        (device,) = self.held('host2')
        self.assertEqual({device: server['id']}, self.held('host2'))


class TestRebuildClaimFails(FailedMovesBase):
    """A rebuild on the instance's own host that cannot claim a device."""

    def test_error_not_a_server_without_a_guest(self):
        compute = self.start_vgpu_compute('host1')
        server = self._create_server(image_uuid=IMAGE, flavor_id=self.flavor,
                                     networks='none',
                                     expected_state='ACTIVE')
        ext = compute.driver._vgpu_ext()
        ((lost, _),) = self.held('host1').items()
        gpu = ext.ledger.get(lost).gpu
        # A broken host: the device and its entry gone, the GPU then
        # filled by another owner, so no claim can find room there.
        ext.backend.remove_device(lost)
        with ext.ledger.transaction():
            ext.ledger.delete(lost)
        snapshot = ext.backend.scan()
        for parent in next(g for g in snapshot.gpus
                           if g.name == gpu).parents:
            while ext.backend.available(parent.name, 'nvidia-18'):
                ext.backend.create_device(
                    parent.name, 'nvidia-18',
                    ext.backend.new_device_id(parent.name, 'nvidia-18'))
        self.api.post_server_action(
            server['id'], {'rebuild': {'imageRef': IMAGE}})
        server = self._wait_for_state_change(server, 'ERROR')
        self.assertIn('claim for %s' % server['id'],
                      server['fault']['message'])
        self.assertEqual({}, self.held('host1'))
