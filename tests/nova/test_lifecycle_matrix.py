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
"""Every server operation keeps its vGPU: a matrix through Nova's API.

A table, not a handful of tests: each server operation that moves or
remakes a guest (:data:`MOVES`) is followed by each later operation that
reads its devices (:data:`FOLLOWERS`), on a server with one vGPU and with
two, on an mdev host and on a host of NVIDIA's vendor-specific VFIO. One
test per move, host and size: the move, then a follower, then the move
again, then the next follower, so every follower runs right after the
move. After every step (and in the middle of a move, while it waits for
its confirmation) Placement, the ledger, the hosts' devices and every
domain on both hosts agree (:meth:`MatrixBase.assertAgree`), and nothing
is left for the orphan grace period to clean up.

Nova's own vGPU code passes these sequences because it reads the devices
from the domain; the ledger must follow Nova's consumers as Placement
does: the instance holds what its current host holds, a migration what
its source holds while a move waits for its confirmation.
"""

import os

import fixtures
import nova.conf as nova_conf
from nova.tests.functional.libvirt import base
import os_resource_classes as orc
import yaml

from tests.nova import fake_libvirt
from tests.nova import test_driver
from tests.nova import waits
from vgpu_nova_ext.devices import ledger as ledger_mod
from vgpu_nova_ext.host import simulated
from vgpu_nova_ext import inventory
from vgpu_nova_ext.placement import client as placement_client
from vgpu_nova_ext.placement import ownership

IMAGE = test_driver.IMAGE
#: A second image of Nova's fake Glance, for rebuilds with a new image.
OTHER_IMAGE = 'a2459075-d96c-40d5-893e-577ff92e721c'
HOSTS = ('host1', 'host2')

#: Operations that move or remake the guest: each is followed by each
#: of FOLLOWERS.
MOVES = (
    'cold_migrate_confirm', 'cold_migrate_revert',
    'resize_confirm', 'resize_revert',
    'resize_same_host_confirm', 'resize_same_host_revert',
    'live_migrate', 'evacuate', 'shelve_unshelve', 'rebuild',
)
#: Operations that read the instance's devices; delete ends the server.
FOLLOWERS = (
    'stop_start', 'hard_reboot', 'rebuild', 'suspend_resume',
    'shelve_unshelve', 'live_migrate', 'migrate_back_revert', 'delete',
)


class MatrixBase(waits.PatientWaits, base.LibvirtMigrationMixin,
                 test_driver.DriverTestBase):
    """Two hosts that can live migrate vGPUs both ways, one server."""

    #: vGPUs the server boots with; resizes switch between 1 and 2.
    vgpus = 1
    # Nova's minimums for live migrating a VF of a VFIO variant driver
    # (they are above those of mdev live migration), on both hosts.
    libvirt_version = 10000000
    qemu_version = 8002002

    #: GPUs of the profile each host keeps: two are enough for a guest of
    #: two vGPUs on GPUs of their own, and every check reads each GPU's
    #: provider on both hosts after every step.
    gpus = 2

    def setUp(self):
        spec = yaml.safe_load(simulated.load_profile(self.profile).text)
        kept = spec['gpus'][:self.gpus]
        spec['gpus'] = kept
        addresses = {g['address'] for g in kept}
        # A profile's own device (made before Nova) stays if its GPU does.
        spec['mediated_devices'] = [
            dict(d, parent=kept[-1]['address'])
            for d in spec.get('mediated_devices', [])][:1]
        assert all(d['parent'] in addresses
                   for d in spec['mediated_devices'])
        self.profile = os.path.join(
            self.useFixture(fixtures.TempDir()).path, 'matrix.yaml')
        with open(self.profile, 'w') as f:
            yaml.safe_dump(spec, f)
        super().setUp()
        # As Nova's own vGPU tests: the fake instances have no disks to
        # move, nor a directory for rescue and resize files.
        self.useFixture(fixtures.MockPatch(
            'nova.virt.libvirt.LibvirtDriver._get_instance_disk_info',
            return_value=[]))
        self.useFixture(fixtures.MockPatch('os.rename'))
        attach, detach = fake_libvirt.mdev_hotplug(fake_libvirt.load())
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Domain.attachDevice', attach))
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Domain.detachDevice', detach))
        for host in HOSTS:
            self.start_compute(hostname=host,
                               libvirt_version=self.libvirt_version,
                               qemu_version=self.qemu_version)
        # What a profile comes with (devices made before Nova): kept.
        self.baseline = {host: self.device_ids(host) for host in HOSTS}
        self.flavors = {n: self.vgpu_flavor(n) for n in (1, 2)}
        self.client = placement_client.PlacementClient.for_endpoint(
            self.placement.fixture.endpoint)
        self.steps = ['boot on host1 with %d vGPU(s)' % self.vgpus]
        self.server = self._create_server(
            image_uuid=IMAGE, flavor_id=self.flavors[self.vgpus],
            networks='none', host='host1', expected_state='ACTIVE')
        self.assertAgree()

    def vgpu_flavor(self, n: int) -> str:
        """A flavor of ``n`` vGPUs, each on a GPU of its own."""
        if n == 1:
            spec = {'resources:VGPU': '1'}
        else:
            spec = {'resources%d:VGPU' % i: '1' for i in range(1, n + 1)}
            spec['group_policy'] = 'isolate'
        return self._create_flavor(memory_mb=256 * n, vcpu=1, disk=1,
                                   ephemeral=0, extra_spec=spec)

    def _migrate_stub(self, domain, destination, params, flags):
        # As libvirt migrates with Nova's flags (VIR_MIGRATE_PERSIST_DEST):
        # the guest is defined on the destination, not only running there
        # (the mixin's transient domain vanishes at its first shutdown).
        guest = self.dest.driver._host.get_connection().defineXML(
            params['destination_xml'])
        guest.create()
        self.src.driver._host.get_connection().lookupByUUIDString(
            self.server['id']).complete_job()
        self.migrate_stub_ran = True

    # -- the four views ------------------------------------------------------
    def ext(self, host):
        return self.computes[host].driver._vgpu_ext()

    def device_ids(self, host) -> set[str]:
        return {d.device_id for d in
                self.ext(host).backend.scan().mediated_devices}

    def where(self) -> str:
        return self.api.get_server(self.server['id'])[
            'OS-EXT-SRV-ATTR:host']

    def other(self, host: str) -> str:
        return HOSTS[1 - HOSTS.index(host)]

    def held_by(self, host, consumer) -> set[str]:
        """The devices the ledger of ``host`` gives ``consumer``."""
        return {e.device_id for e in self.ext(host).ledger.of_consumer(
            consumer)}

    def assertAgree(self, deleted: bool = False):
        """Placement, ledgers, hosts' devices and domains: one picture.

        On each host: the audit of ownership finds nothing (each vGPU
        allocation has its devices there, under the same consumer; each
        device a consumer holds has its allocation; every domain uses only
        devices the ledger gives it); no device waits for the orphan grace
        period; the host holds exactly its baseline and the ledger's
        devices. The server's own guest uses exactly the devices the
        ledger gives it, as many as its flavor asks (none while suspended,
        detached).
        """
        context = ' after: ' + ' -> '.join(self.steps)
        server = None if deleted else self.api.get_server(self.server['id'])
        for host in HOSTS:
            ext = self.ext(host)
            gpus = {inventory.provider_name(host, a.gpu.name): a.gpu.name
                    for a in ext.assignment.gpus}
            connection = self.computes[host].driver._host.get_connection()
            guests = ownership.guests_of(connection)
            findings = ownership.join(
                ownership.read_allocations(self.client, host, gpus),
                ext.ledger.all(), ext.ledger.links(),
                ext.backend.scan(), guests)
            self.assertEqual([], findings, host + context)
            entries = ext.ledger.all()
            self.assertEqual(
                [], [e.device_id for e in entries
                     if e.orphaned_at is not None or e.state not in (
                         ledger_mod.ACTIVE, ledger_mod.FREE)],
                host + ': devices left for the orphan grace' + context)
            on_host = self.device_ids(host)
            known = {e.device_id for e in entries}
            self.assertEqual(set(), known - on_host,
                             host + ': ledger devices gone' + context)
            # A profile's own unused device may be reused (and removed
            # when freed); nothing else is on the host.
            self.assertEqual(set(), on_host - known - self.baseline[host],
                             host + ': devices the ledger does not know'
                             + context)
            here = server is not None and \
                server['OS-EXT-SRV-ATTR:host'] == host
            mine = self.held_by(host, self.server['id'])
            if server is None or server['status'] == 'SHELVED_OFFLOADED':
                self.assertEqual(set(), mine, host + context)
                continue
            if not here:
                # A move's source: what it keeps for a revert is the
                # migration's, as its allocations are (the audit above).
                self.assertEqual(set(), mine, host + context)
                continue
            wanted = sum(int(v) for k, v in
                         server['flavor']['extra_specs'].items()
                         if k.endswith(':VGPU'))
            self.assertEqual(wanted, len(mine), host + context)
            in_guest = set(guests.get(self.server['id'], []))
            if server['status'] == 'SUSPENDED':
                self.assertEqual(set(), in_guest, host + context)
            else:
                self.assertEqual(mine, in_guest, host + context)
            allocations = self._get_allocations_by_server_uuid(
                self.server['id'])
            self.assertEqual(wanted, sum(
                a['resources'].get(orc.VGPU, 0) for rp, a in
                allocations.items()), host + context)

    # -- the operations ------------------------------------------------------
    def step(self, name: str) -> None:
        self.steps.append(name)
        getattr(self, 'op_' + name)()
        self.assertAgree(deleted=name == 'delete')

    def midway(self, name: str) -> None:
        """A move waiting for its confirmation: the views agree too."""
        self.steps.append(name)
        self.assertAgree()

    def _confirm(self, source: str) -> None:
        # As Nova's own vGPU tests do: the libvirt driver's clean-up of the
        # source looks at CONF.host, which in one process is the last
        # started compute's.
        orig = nova_conf.CONF.host
        self.flags(host=source)
        try:
            self._confirm_resize(self.server)
        finally:
            self.flags(host=orig)
        self._wait_for_state_change(self.server, 'ACTIVE')

    def _move(self, flavor: str | None, same_host: bool, confirm: bool):
        source = self.where()
        self.flags(allow_resize_to_same_host=same_host)
        other = self.api.get_services(host=self.other(source),
                                      binary='nova-compute')[0]
        if same_host:
            # Only the source can take it.
            self.api.put_service(other['id'], {'status': 'disabled'})
        try:
            if flavor is None:
                self._migrate_server(self.server)
            else:
                self._resize_server(self.server, flavor)
        finally:
            if same_host:
                self.api.put_service(other['id'], {'status': 'enabled'})
        self.assertEqual(source if same_host else self.other(source),
                         self.where())
        self.midway('(waiting for confirmation)')
        if confirm:
            self._confirm(source)
        else:
            self._revert_resize(self.server)
            self.assertEqual(source, self.where())

    def _other_flavor(self) -> str:
        server = self.api.get_server(self.server['id'])
        vgpus = sum(int(v) for k, v in
                    server['flavor']['extra_specs'].items()
                    if k.endswith(':VGPU'))
        return self.flavors[3 - vgpus]

    def op_cold_migrate_confirm(self):
        self._move(None, same_host=False, confirm=True)

    def op_cold_migrate_revert(self):
        self._move(None, same_host=False, confirm=False)

    def op_resize_confirm(self):
        self._move(self._other_flavor(), same_host=False, confirm=True)

    def op_resize_revert(self):
        self._move(self._other_flavor(), same_host=False, confirm=False)

    def op_resize_same_host_confirm(self):
        self._move(self._other_flavor(), same_host=True, confirm=True)

    def op_resize_same_host_revert(self):
        self._move(self._other_flavor(), same_host=True, confirm=False)

    def op_migrate_back_revert(self):
        self._move(None, same_host=False, confirm=False)

    def op_live_migrate(self):
        source = self.where()
        # LibvirtMigrationMixin's stub moves the domain from src to dest.
        self.src = self.computes[source]
        self.dest = self.computes[self.other(source)]
        self._live_migrate(self.server, 'completed')
        self.assertEqual(self.other(source), self.where())
        # Nova marks the migration completed, then gives the source's
        # allocations (the migration's) back.
        migration = max(
            (m for m in self.api.api_get('/os-migrations').body['migrations']
             if m['instance_uuid'] == self.server['id']),
            key=lambda m: m['id'])
        self._poll(lambda: self.placement.get(
            '/allocations/%s' % migration['uuid']).body['allocations'],
            lambda found: not found,
            'the source allocations of %s to go' % migration['uuid'])

    def op_evacuate(self):
        source = self.where()
        self.computes[source].stop()
        service = self.api.get_services(host=source,
                                        binary='nova-compute')[0]
        self.api.put_service(service['id'], {'forced_down': True})
        # Since microversion 2.95 an evacuated server is stopped there.
        self._evacuate_server(self.server, expected_host=self.other(source),
                              expected_state='SHUTOFF')
        # The source comes back: Nova destroys the evacuated guest there.
        self.restart_compute_service(source)
        self.api.put_service(service['id'], {'forced_down': False})
        self.midway('(evacuated, the source back)')
        self._start_server(self.server)

    def op_shelve_unshelve(self):
        self._shelve_server(self.server, 'SHELVED_OFFLOADED')
        self.midway('(shelved offloaded)')
        self._unshelve_server(self.server)

    def op_rebuild(self):
        server = self.api.get_server(self.server['id'])
        image = OTHER_IMAGE if server['image']['id'] == IMAGE else IMAGE
        self._rebuild_server(self.server, image)

    def op_stop_start(self):
        self._stop_server(self.server)
        self.midway('(stopped)')
        self._start_server(self.server)

    def op_hard_reboot(self):
        self._reboot_server(self.server, hard=True)

    def op_suspend_resume(self):
        self.api.post_server_action(self.server['id'], {'suspend': None})
        self._wait_for_state_change(self.server, 'SUSPENDED')
        self.midway('(suspended)')
        self.api.post_server_action(self.server['id'], {'resume': None})
        self._wait_for_state_change(self.server, 'ACTIVE')

    def op_delete(self):
        self._delete_server(self.server)

    def run_matrix(self, move: str) -> None:
        for follower in FOLLOWERS:
            self.step(move)
            self.step(follower)


def with_matrix(cls):
    """One test per move: the move, then each later operation."""
    def make(move):
        def test(self):
            self.run_matrix(move)
        test.__name__ = 'test_' + move
        test.__doc__ = '%s, then each later operation.' % move
        return test
    for move in MOVES:
        setattr(cls, 'test_' + move, make(move))
    return cls


@with_matrix
class TestMdevOneVgpu(MatrixBase):
    """Volta on the mdev bus: V100DX-8Q, four per GPU."""

    profile = 'v100x8'
    enabled_types = 'nvidia-197'
    vgpus = 1


@with_matrix
class TestMdevTwoVgpus(MatrixBase):
    profile = 'v100x8'
    enabled_types = 'nvidia-197'
    vgpus = 2


@with_matrix
class TestVfioOneVgpu(MatrixBase):
    """NVIDIA's vendor-specific VFIO: L40S-4Q on typed VFs."""

    profile = 'l40s-vfio'
    enabled_types = 'nvidia-1150'
    vgpus = 1


@with_matrix
class TestVfioTwoVgpus(MatrixBase):
    profile = 'l40s-vfio'
    enabled_types = 'nvidia-1150'
    vgpus = 2
