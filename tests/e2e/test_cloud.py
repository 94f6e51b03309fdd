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
import functools
import hashlib
import hmac
import json
import os
import subprocess
import time
import unittest
import urllib.request

import yaml

from tests.e2e import cloud as cloud_mod
from tests.e2e import config

TIMEOUT = 180
#: GPUs of each host (tests/e2e/v100x3.yaml) and what they hold.
SLOTS_16Q, SLOTS_32Q = 4, 1
ID_TRAIT = 'CUSTOM_VGPU_NVIDIA_%s'


def _noting_failure(step):
    @functools.wraps(step)
    def run(self):
        try:
            step(self)
        except BaseException:
            CloudTestCase.failed = True
            raise
    return run


class CloudTestCase(unittest.TestCase):
    cloud: cloud_mod.Cloud = None
    failed = False

    @classmethod
    def setUpClass(cls):
        cls.cloud = cloud_mod.Cloud()
        try:
            cls.cloud.up()
        except BaseException:
            cls.report()
            cls.cloud.down(keep_files=True)
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.failed:
            cls.report()
        keep = os.environ.get('VGPU_NOVA_EXT_E2E_KEEP') == '1'
        cls.cloud.down(keep_files=keep or cls.failed)
        print('\nthe services\' logs: %s' % cls.cloud.log_dir)

    @classmethod
    def report(cls):
        """The tail of every service's log, on failure."""
        for name in sorted(os.listdir(cls.cloud.log_dir)):
            tail = cls.cloud.supervisor.tail(name[:-4], 30)
            print('\n---- %s (tail) ----\n%s' % (name, tail))

    def __init_subclass__(cls, **kwargs):
        # A failed step keeps the cloud's files and prints every log's
        # tail at the end.
        super().__init_subclass__(**kwargs)
        for name, step in list(vars(cls).items()):
            if name.startswith('test_'):
                setattr(cls, name, _noting_failure(step))

    # -- helpers ------------------------------------------------------------
    def admin(self, *args, **kwargs):
        return self.cloud.openstack(*args, **kwargs)

    def tenant(self, *args, **kwargs):
        return self.cloud.openstack(*args, user='demo', project='demo',
                                    **kwargs)

    def boot(self, name, flavor, count=1, expect='ACTIVE', config_drive=False):
        """``count`` servers, one request each, as a tenant would.

        Not one multiple-create request: Nova's scheduler claims each
        instance of such a request with the first allocation candidate of
        a host, fetched once for them all, so on nested GPU providers the
        second instance meets a GPU the first one filled (HTTP 409) and
        that host is skipped: "No valid host" with room left.
        """
        servers = []
        for number in range(1, count + 1):
            server = name if count == 1 else '%s-%d' % (name, number)
            args = ['server', 'create', '--flavor', flavor, '--image',
                    'guest', '--nic', 'none']
            if config_drive:
                args += ['--config-drive', 'True']
            self.tenant(*(args + [server]))
            servers.append(self.wait_for(server, expect))
        return servers

    def server_id(self, name):
        """The ID of the tenant's server of that name.

        The admin finds another project's server by its ID only.
        """
        found = self.tenant('server', 'list', '--name', '^%s$' % name)
        return found[0]['ID'] if found else None

    def wait_for(self, name, status, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        server = None
        while True:
            server_id = self.server_id(name)
            if server_id:
                server = self.admin('server', 'show', server_id)
                if server['status'] == status and not server.get(
                        'OS-EXT-STS:task_state'):
                    return server
                if server['status'] == 'ERROR' and status != 'ERROR':
                    self.fail('%s ended in ERROR: %s' % (
                        name, server.get('fault')))
            if time.monotonic() > deadline:
                self.fail('%s not %s within %d s: %s' % (
                    name, status, timeout, server))
            time.sleep(2)

    def wait_gone(self, name, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while self.server_id(name):
            if time.monotonic() > deadline:
                self.fail('%s not deleted within %d s' % (name, timeout))
            time.sleep(2)

    def delete(self, *names):
        self.tenant('server', 'delete', *names, parse=False)
        for name in names:
            self.wait_gone(name)

    def host_of(self, server):
        return server['OS-EXT-SRV-ATTR:host']

    def gpu_usage(self):
        """{provider name: (used, total)} of every GPU provider."""
        usage = {}
        for rp in self.admin('resource', 'provider', 'list'):
            if '_pci_' not in rp['name']:
                continue
            inventory = {i['resource_class']: i for i in self.admin(
                'resource', 'provider', 'inventory', 'list', rp['uuid'])}
            used = self.admin('resource', 'provider', 'usage', 'show',
                              rp['uuid'])
            used = {u['resource_class']: u['usage'] for u in used}
            usage[rp['name']] = (used.get('VGPU', 0),
                                 inventory['VGPU']['total'])
        return usage

    def vgpu_nova_ext(self, host, *args, parse_json=True, check=True):
        """This project's command on ``host``, with its nova.conf.

        As nova, as operators run it (``sudo -u nova``).
        """
        result = subprocess.run(
            [self.cloud.layout.bin('vgpu-nova-ext'), '--config-file',
             self.cloud.layout.conf(host, 'nova.conf'), '--host', host]
            + list(args), capture_output=True, text=True, timeout=120,
            user=cloud_mod.NOVA_USER, group=cloud_mod.NOVA_USER,
            extra_groups=[], cwd=self.cloud.base)
        if check:
            self.assertEqual(0, result.returncode, '%s: %s%s' % (
                args, result.stdout, result.stderr))
        return json.loads(result.stdout) if parse_json else result

    def ledger(self, host):
        """{device: owner} of the host's ledger, devices on the host."""
        devices = self.vgpu_nova_ext(host, 'devices', '--format', 'json')
        return {d['device']: d['owner'] for d in devices['devices']
                if d['host'] == 'present'}

    def metadata(self, server, path='openstack/latest/vendor_data2.json'):
        """What the guest reads, through Neutron's metadata proxy."""
        signature = hmac.new(config.METADATA_SECRET.encode(),
                             server['id'].encode(), hashlib.sha256)
        request = urllib.request.Request(
            'http://127.0.0.1:%d/%s' % (self.cloud.layout.ports.metadata,
                                        path),
            headers={'X-Instance-ID': server['id'],
                     'X-Tenant-ID': server['project_id'],
                     'X-Instance-ID-Signature': signature.hexdigest(),
                     'X-Forwarded-For': '10.0.0.5'})
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read())


class TestVGPUCloud(CloudTestCase):
    """The steps, in order (unittest runs them by name)."""

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
            self.admin(*(args + [name]))
        image = os.path.join(self.cloud.base, 'guest.img')
        with open(image, 'wb') as f:
            f.write(b'\0' * 1024 * 1024)
        self.admin('image', 'create', '--file', image, '--disk-format',
                   'raw', '--container-format', 'bare', '--public', 'guest')
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
        usage = self.gpu_usage()
        self.assertEqual({name: (total, total) for name, (_, total)
                          in usage.items()}, usage)
        refused = self.boot('refused', 'vgpu', expect='ERROR')[0]
        self.assertIn('No valid host', refused['fault']['message'])
        self.delete('refused')
        # Every server's devices, and only those, in its host's ledger.
        for host in self.cloud.layout.computes:
            owners = list(self.ledger(host).values())
            here = [s for s in whole + double + small
                    if self.host_of(s) == host]
            self.assertEqual(
                sorted(s['id'] for s in here for _ in range(
                    2 if s['name'].startswith('double') else 1)),
                sorted(owners), host)
        # Two deleted, their devices freed; the next boot fits.
        self.delete('small-1', 'small-2')
        self.boot('again', 'vgpu')

    def test_03_licensing_reaches_the_guest(self):
        server = self.admin('server', 'show', self.server_id('licensed'))
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
        self.delete('plain')

    def vgpu_servers_on(self, host, flavor='vgpu'):
        found = []
        for row in self.tenant('server', 'list', '--long'):
            server = self.admin('server', 'show', row['ID'])
            if self.host_of(server) == host and \
                    server['flavor']['original_name'] == flavor:
                found.append(server)
        return found

    def free_host(self):
        """The host with a free 16Q slot (one is left by step 2)."""
        free = {name.split('_pci_')[0] for name, (used, total)
                in self.gpu_usage().items() if used < total}
        self.assertEqual(1, len(free), self.gpu_usage())
        return free.pop()

    def assertDevicesOn(self, server, host):
        """The server's vGPU in ``host``'s ledger, in no other's."""
        for each in self.cloud.layout.computes:
            owners = list(self.ledger(each).values())
            self.assertEqual(1 if each == host else 0,
                             owners.count(server['id']), (each, owners))

    def test_04_resize_confirm_and_revert(self):
        target = self.free_host()
        source = next(h for h in self.cloud.layout.computes if h != target)
        moving = self.vgpu_servers_on(source)[0]
        self.tenant('server', 'resize', '--flavor', 'vgpu-big',
                    moving['id'], parse=False)
        resized = self.wait_for(moving['name'], 'VERIFY_RESIZE')
        self.assertEqual(target, self.host_of(resized))
        self.tenant('server', 'resize', 'confirm', moving['id'],
                    parse=False)
        moved = self.wait_for(moving['name'], 'ACTIVE')
        self.assertEqual(target, self.host_of(moved))
        self.assertDevicesOn(moved, target)
        # And back the other way, reverted: the server stays where it was.
        staying = next(s for s in self.vgpu_servers_on(target)
                       if s['id'] != moved['id'])
        self.tenant('server', 'resize', '--flavor', 'vgpu-big',
                    staying['id'], parse=False)
        self.assertEqual(source, self.host_of(
            self.wait_for(staying['name'], 'VERIFY_RESIZE')))
        self.tenant('server', 'resize', 'revert', staying['id'],
                    parse=False)
        reverted = self.wait_for(staying['name'], 'ACTIVE')
        self.assertEqual(target, self.host_of(reverted))
        self.assertDevicesOn(reverted, target)
        self.assertEqual(source, self.free_host())

    def test_05_rabbitmq_restarted_between_two_steps(self):
        self.cloud.supervisor.restart('rabbitmq')
        server = self.boot('after-rabbitmq', 'vgpu')[0]
        self.delete(server['name'])

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
        self.delete(server['name'])

    def privsep_daemons(self, host):
        ps = subprocess.run(['ps', '-ww', '-eo', 'pid,user:32,args'],
                            check=True, capture_output=True,
                            text=True).stdout
        conf = self.cloud.layout.conf(host, 'nova.conf')
        return [line for line in ps.splitlines()
                if 'privsep-helper' in line and conf in line
                and 'vgpu_nova_ext' in line and ' sudo ' not in line]

    def test_07_nova_compute_killed_during_a_boot(self):
        host = self.free_host()
        before = {line.split()[0] for line in self.privsep_daemons(host)}
        self.tenant('server', 'create', '--flavor', 'vgpu', '--image',
                    'guest', '--nic', 'none', 'crashed')
        deadline = time.monotonic() + TIMEOUT
        while True:
            server_id = self.server_id('crashed')
            server = server_id and self.admin('server', 'show', server_id)
            if server and self.host_of(server):
                break
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
        deadline = time.monotonic() + TIMEOUT
        while True:
            server = self.admin('server', 'show', server_id)
            if server['status'] in ('ACTIVE', 'ERROR') and not server.get(
                    'OS-EXT-STS:task_state'):
                break
            self.assertLess(time.monotonic(), deadline, server)
            time.sleep(2)
        if server['status'] == 'ACTIVE':
            self.assertDevicesOn(server, host)
        self.delete('crashed')
        # The new nova-compute wrote through a daemon of its own.
        self.assertTrue(self.privsep_daemons(host))
        for each in self.cloud.layout.computes:
            self.assertNotIn(server_id, self.ledger(each).values())

    def test_09_every_host_agrees(self):
        for host in self.cloud.layout.computes:
            self.vgpu_nova_ext(host, 'audit', parse_json=False)
            self.vgpu_nova_ext(host, 'audit', '--ownership',
                               parse_json=False)
            metrics = self.vgpu_nova_ext(host, 'metrics', parse_json=False)
            self.assertIn('vgpu_nova_ext_up 1.0', metrics.stdout)
        # Placement's VGPU allocations are the ledgers' devices.
        used = sum(used for used, _ in self.gpu_usage().values())
        devices = sum(len(self.ledger(h)) for h in self.cloud.layout.computes)
        self.assertEqual(used, devices)
        for server in self.admin('server', 'list', '--all-projects'):
            self.assertEqual('ACTIVE', server['Status'], server)
        # nova-compute as nova, its privsep daemons as root.
        ps = subprocess.run(['ps', '-ww', '-eo', 'user:32,args'], check=True,
                            capture_output=True, text=True).stdout
        computes = [line for line in ps.splitlines()
                    if 'fake_compute.py' in line]
        self.assertTrue(computes)
        self.assertTrue(all(line.split()[0] == cloud_mod.NOVA_USER
                            for line in computes), computes)
        daemons = [line for line in ps.splitlines()
                   if 'privsep-helper' in line and 'vgpu_nova_ext' in line
                   and 'sudo' not in line.split()[1]]
        self.assertTrue(daemons, ps)
        self.assertTrue(all(line.split()[0] == 'root' for line in daemons))
        # The token in no service's log.
        for name in os.listdir(self.cloud.log_dir):
            with open(os.path.join(self.cloud.log_dir, name)) as f:
                self.assertNotIn(cloud_mod.TOKEN, f.read(), name)
