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
"""vGPU servers on a whole cloud, driven only by the openstack CLI.

One cloud for the module (:mod:`tests.e2e.cloud`: every service a
process, nova-compute as ``nova`` writing its host through privsep); the
steps run in order, as an operator and a tenant would take them, and each
leaves the cloud as the next expects. libvirt in the compute services is
Nova's fake (see :mod:`tests.e2e.fake_compute`): this machine's kernel has
no VFIO or mdev support, so a real libvirt cannot start a vGPU guest here.

Live migration is not tried: Nova's fake libvirt migrates a domain only
within one process (its ``migrateToURI3`` hands the domain to a
connection object of the same process), so between two nova-compute
processes it proves nothing; Nova's functional harness (tests/nova)
covers live migration with this driver.
"""

import base64
import json
import os
import subprocess
import time

import yaml

from tests.e2e import base
from tests.e2e import cloud as cloud_mod
from tests.e2e import config

#: GPUs of each host (tests/e2e/v100x3.yaml) and what they hold.
SLOTS_16Q, SLOTS_32Q = 4, 1
ID_TRAIT = 'CUSTOM_VGPU_NVIDIA_%s'


class TestVGPUCloud(base.CloudTestCase):
    """The steps, in order (unittest runs them by name)."""

    #: {name: ID} of the tenant's servers that later steps use.
    servers: dict = {}

    def test_01_operator_sets_up_flavors_and_an_image(self):
        small, whole = config.TYPES
        flavors = {
            'vgpu': {'resources:VGPU': '1'},
            'vgpu-big': {'resources:VGPU': '1'},
            'vgpu-whole': {'resources:VGPU': '1',
                           'trait:' + ID_TRAIT % whole.split('-')[1]:
                           'required'},
            'vgpu-double': {'resources1:VGPU': '1', 'resources2:VGPU': '1',
                            'group_policy': 'isolate',
                            'trait1:' + ID_TRAIT % small.split('-')[1]:
                            'required',
                            'trait2:' + ID_TRAIT % small.split('-')[1]:
                            'required'},
            'plain': {},
        }
        for name, specs in flavors.items():
            ram = '1024' if name == 'vgpu-big' else '512'
            args = ['flavor', 'create', '--vcpus', '1', '--ram', ram,
                    '--disk', '1', '--public']
            for key, value in specs.items():
                args += ['--property', '%s=%s' % (key, value)]
            self.admin(*(args + [name]), parse=False)
        image = os.path.join(self.cloud.base, 'guest.img')
        with open(image, 'wb') as f:
            f.write(b'\0' * 1024 * 1024)
        self.admin('image', 'create', '--file', image, '--disk-format',
                   'raw', '--container-format', 'bare', '--public', 'guest',
                   parse=False)
        usage = self.gpu_usage()
        # Three GPU providers a host: 2 + 2 16Q, 1 32Q.
        self.assertEqual(6, len(usage), usage)
        self.assertEqual(2 * (SLOTS_16Q + SLOTS_32Q),
                         sum(total for _, total in usage.values()))

    def test_02_tenant_fills_both_hosts(self):
        whole = self.boot('whole', 'vgpu-whole', count=2)
        self.assertEqual(set(self.cloud.layout.computes),
                         {self.host_of(s) for s in whole})
        double = self.boot('double', 'vgpu-double', count=2)
        # The rest of the 16Q slots: four, with one config drive.
        small = self.boot('small', 'vgpu', count=3)
        small += self.boot('licensed', 'vgpu', config_drive=True)
        self.servers.update((s['name'], s['id']) for s in small)
        usage = self.gpu_usage()
        self.assertEqual({name: (total, total) for name, (_, total)
                          in usage.items()}, usage)
        refused = self.boot('refused', 'vgpu', expect='ERROR')[0]
        self.assertIn('No valid host', refused['fault']['message'])
        self.delete(refused)
        # Every server's devices, and only those, in its host's ledger.
        for host in self.cloud.layout.computes:
            owners = list(self.ledger(host).values())
            here = [s for s in whole + double + small
                    if self.host_of(s) == host]
            self.assertEqual(
                sorted(s['id'] for s in here for _ in range(
                    2 if s in double else 1)),
                sorted(owners), host)
        # Two deleted, their devices freed; the next boot fits.
        self.delete(*small[:2])
        self.boot('again', 'vgpu')

    def test_03_licensing_reaches_the_guest(self):
        server = self.show(self.servers['licensed'])
        vendor = self.metadata(server)
        document = yaml.safe_load(vendor['cloud-init'])
        files = {f['path']: base64.b64decode(f['content'])
                 for f in document['write_files']}
        token = files[
            '/etc/nvidia/ClientConfigToken/client_configuration_token.tok']
        self.assertEqual(cloud_mod.TOKEN.encode(), token)
        self.assertIn(b'FeatureType=1', files['/etc/nvidia/gridd.conf'])
        plain = self.boot('plain', 'plain')[0]
        # Nova files the service's empty answer as {}: no licensing.
        self.assertFalse(self.metadata(plain).get('cloud-init'))
        # The config drive Nova built on the host holds the files too.
        iso = os.path.join(self.cloud.layout.path('instances'),
                           server['id'], 'disk.config')

        def read(path):
            return subprocess.run(['isoinfo', '-R', '-i', iso, '-x', path],
                                  check=True, capture_output=True,
                                  timeout=60).stdout

        meta = json.loads(read('/openstack/latest/meta_data.json'))
        drive = {f['path']: read('/openstack' + f['content_path'])
                 for f in meta['files']}
        self.assertEqual(cloud_mod.TOKEN.encode(), drive[
            '/etc/nvidia/ClientConfigToken/client_configuration_token.tok'])
        self.delete(plain)

    def resize(self, server_id, finish):
        """Resize to vgpu-big, then ``finish`` (confirm or revert)."""
        self.tenant('server', 'resize', '--flavor', 'vgpu-big', server_id,
                    parse=False)
        resized = self.wait_for(server_id, 'VERIFY_RESIZE')
        self.tenant('server', 'resize', finish, server_id, parse=False)
        return resized, self.wait_for(server_id, 'ACTIVE')

    def test_04_resize_confirm_and_revert(self):
        target = self.free_host()
        source = next(h for h in self.cloud.layout.computes if h != target)
        # A server with one vGPU: a 16Q one where there is one (the two
        # two-vGPU servers may hold all 16Q slots of a host), else the
        # host's 32Q one; vgpu-big asks for any type, so it takes the one
        # free slot.
        single = ('vgpu', 'vgpu-whole')
        resized, moved = self.resize(self.servers_on(source, single)[0],
                                     'confirm')
        self.assertEqual(target, self.host_of(resized))
        self.assertEqual(target, self.host_of(moved))
        self.assertDevicesOn(moved, target)
        # And back the other way, reverted: the server stays where it was.
        resized, reverted = self.resize(self.servers_on(target, single)[0],
                                        'revert')
        self.assertEqual(source, self.host_of(resized))
        self.assertEqual(target, self.host_of(reverted))
        self.assertDevicesOn(reverted, target)
        self.assertEqual(source, self.free_host())

    def test_05_rabbitmq_restarted_between_two_steps(self):
        self.cloud.supervisor.restart('rabbitmq')
        # At once: the casts of this boot meet services that are still
        # reconnecting.
        server = self.boot('after-rabbitmq', 'vgpu')[0]
        self.delete(server)

    def test_06_placement_down_longer_than_a_periodic_task(self):
        before = sorted(p['name'] for p in self.admin(
            'resource', 'provider', 'list'))
        self.cloud.supervisor.stop('placement')
        # Two periodic tasks of each compute meet it down.
        time.sleep(25)
        self.cloud.supervisor.start(self.cloud.supervisor.specs['placement'])
        server = self.boot('after-placement', 'vgpu')[0]
        after = sorted(p['name'] for p in self.admin(
            'resource', 'provider', 'list'))
        self.assertEqual(before, after)
        self.assertEqual(len(after), len(set(after)))
        self.delete(server)

    def test_07_nova_compute_killed_during_a_boot(self):
        host = self.free_host()
        before = {line.split()[0] for line in self.privsep_daemons(host)}
        server_id = self.create('crashed', 'vgpu')
        deadline = time.monotonic() + base.TIMEOUT
        while not self.host_of(self.show(server_id)):
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.2)
        self.cloud.supervisor.kill('nova-compute-' + host)
        # Its privsep daemons notice and end, as root processes of no one.
        deadline = time.monotonic() + 60
        while before & {line.split()[0]
                        for line in self.privsep_daemons(host)}:
            self.assertLess(time.monotonic(), deadline,
                            self.privsep_daemons(host))
            time.sleep(1)
        self.cloud.supervisor.start(
            self.cloud.supervisor.specs['nova-compute-' + host])
        deadline = time.monotonic() + base.TIMEOUT
        while True:
            server = self.show(server_id)
            if server['status'] in ('ACTIVE', 'ERROR') and not server.get(
                    'OS-EXT-STS:task_state'):
                break
            self.assertLess(time.monotonic(), deadline, server)
            time.sleep(base.POLL)
        if server['status'] == 'ACTIVE':
            self.assertDevicesOn(server, host)
        self.delete(server)
        # The new nova-compute wrote through a daemon of its own.
        self.assertTrue(self.privsep_daemons(host))
        for each in self.cloud.layout.computes:
            self.assertNotIn(server_id, self.ledger(each).values())

    def test_09_every_host_agrees(self):
        guests = {}
        for host in self.cloud.layout.computes:
            self.vgpu_nova_ext(host, 'audit', parse_json=False)
            self.vgpu_nova_ext(host, 'audit', '--ownership',
                               parse_json=False)
            metrics = self.vgpu_nova_ext(host, 'metrics', parse_json=False)
            self.assertIn('vgpu_nova_ext_up 1.0', metrics.stdout)
            # The ledger's devices are the ones in the host's domains.
            in_domains = {mdev: uuid for uuid, domain
                          in self.domains(host).items()
                          for mdev in domain['mdevs']}
            self.assertEqual(in_domains, self.ledger(host), host)
            guests.update(in_domains)
        # Placement's VGPU allocations are the domains' devices.
        self.assertEqual(len(guests), sum(
            used for used, _ in self.gpu_usage().values()))
        for server in self.admin('server', 'list', '--all-projects'):
            self.assertEqual('ACTIVE', server['Status'], server)
        # nova-compute as nova, its privsep daemons as root.
        ps = subprocess.run(['ps', '-ww', '-eo', 'user:32,args'], check=True,
                            capture_output=True, text=True,
                            timeout=30).stdout
        computes = [line for line in ps.splitlines()
                    if 'fake_compute.py' in line]
        self.assertTrue(computes)
        self.assertTrue(all(line.split()[0] == cloud_mod.NOVA_USER
                            for line in computes), computes)
        daemons = self.privsep_daemons()
        self.assertTrue(daemons)
        self.assertTrue(all(line.split()[1] == 'root' for line in daemons),
                        daemons)
        # The token in no service's log.
        for name in os.listdir(self.cloud.log_dir):
            with open(os.path.join(self.cloud.log_dir, name)) as f:
                self.assertNotIn(cloud_mod.TOKEN, f.read(), name)
