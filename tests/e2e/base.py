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
"""What the e2e steps look at the cloud with: the CLI, the hosts, the guest.

One cloud for the test class (:class:`tests.e2e.cloud.Cloud`), up before
the first step and down after the last; a failed step keeps the cloud's
files and prints the tail of every service's log. Servers are followed
by their ID (``openstack server show``): one CLI call a poll.
"""

import functools
import hashlib
import hmac
import json
import os
import subprocess
import time
import unittest
import urllib.request

from tests.e2e import cloud as cloud_mod
from tests.e2e import config

TIMEOUT = 180
POLL = 2


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
        missing = cloud_mod.missing_prerequisites()
        if missing and os.environ.get('VGPU_NOVA_EXT_REQUIRE_E2E') != '1':
            raise unittest.SkipTest('; '.join(missing))
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

    # -- the CLI ------------------------------------------------------------
    def admin(self, *args, **kwargs):
        return self.cloud.openstack(*args, **kwargs)

    def tenant(self, *args, **kwargs):
        return self.cloud.openstack(*args, user='demo', project='demo',
                                    **kwargs)

    # -- servers ------------------------------------------------------------
    def create(self, name, flavor, config_drive=False):
        """One server, as the tenant asks for it; its ID."""
        args = ['server', 'create', '--flavor', flavor, '--image', 'guest',
                '--nic', 'none']
        if config_drive:
            args += ['--config-drive', 'True']
        return self.tenant(*(args + [name]))['id']

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
            servers.append(self.wait_for(
                self.create(server, flavor, config_drive), expect))
        return servers

    def show(self, server_id):
        """The server as the admin sees it (host included); None if gone."""
        found = self.admin('server', 'show', server_id, check=False)
        if isinstance(found, dict):
            return found
        # The CLI's words for a 404 ("No Server found for <ID>").
        if 'No Server found' in found.stderr:
            return None
        self.fail('server show %s: %s' % (server_id, found.stderr[-500:]))

    def wait_for(self, server_id, status, timeout=TIMEOUT):
        """The server once it is ``status`` with no task under way."""
        deadline = time.monotonic() + timeout
        while True:
            server = self.show(server_id)
            if server and server['status'] == status and not server.get(
                    'OS-EXT-STS:task_state'):
                return server
            if server and server['status'] == 'ERROR' and status != 'ERROR':
                self.fail('%s ended in ERROR: %s' % (
                    server['name'], server.get('fault')))
            if time.monotonic() > deadline:
                self.fail('%s not %s within %d s: %s' % (
                    server_id, status, timeout, server))
            time.sleep(POLL)

    def delete(self, *servers):
        """Delete the servers (dicts), as the tenant; wait until gone."""
        ids = [s['id'] for s in servers]
        self.tenant('server', 'delete', *ids, parse=False)
        deadline = time.monotonic() + TIMEOUT
        for server_id in ids:
            while self.show(server_id):
                if time.monotonic() > deadline:
                    self.fail('%s not deleted within %d s' % (
                        server_id, TIMEOUT))
                time.sleep(POLL)

    @staticmethod
    def host_of(server):
        return server['OS-EXT-SRV-ATTR:host']

    def servers_on(self, host, flavors=('vgpu',)):
        """Every project's servers of ``flavors`` on ``host`` (IDs).

        In the order of ``flavors``.
        """
        rows = [row for row in self.admin(
            'server', 'list', '--all-projects', '--host', host)
            if row['Flavor'] in flavors]
        rows.sort(key=lambda row: flavors.index(row['Flavor']))
        return [row['ID'] for row in rows]

    # -- Placement ----------------------------------------------------------
    def gpu_usage(self):
        """{provider name: (used, total)} of every GPU provider."""
        usage = {}
        for rp in self.admin('resource', 'provider', 'list'):
            if '_pci_' not in rp['name']:
                continue
            inventory = self.admin('resource', 'provider', 'inventory',
                                   'show', rp['uuid'], 'VGPU')
            used = {u['resource_class']: u['usage'] for u in self.admin(
                'resource', 'provider', 'usage', 'show', rp['uuid'])}
            usage[rp['name']] = (used.get('VGPU', 0), inventory['total'])
        return usage

    def free_host(self):
        """The one host with a free 16Q slot (one is left by step 2)."""
        free = {name.split('_pci_')[0] for name, (used, total)
                in self.gpu_usage().items() if used < total}
        self.assertEqual(1, len(free), self.gpu_usage())
        return free.pop()

    # -- the hosts ----------------------------------------------------------
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

    def domains(self, host):
        """The fake hypervisor's domains on ``host`` (fake_compute.py)."""
        with open(self.cloud.domains_file(host)) as f:
            return json.load(f)

    def assertDevicesOn(self, server, host):
        """The server's vGPU in ``host``'s ledger, in no other's."""
        for each in self.cloud.layout.computes:
            owners = list(self.ledger(each).values())
            self.assertEqual(1 if each == host else 0,
                             owners.count(server['id']), (each, owners))

    def privsep_daemons(self, host=None):
        """``pid user args`` of each privsep daemon (of ``host``'s)."""
        ps = subprocess.run(['ps', '-ww', '-eo', 'pid,user:32,args'],
                            check=True, capture_output=True,
                            text=True, timeout=30).stdout
        conf = self.cloud.layout.conf(host or '', 'nova.conf')
        return [line for line in ps.splitlines()
                if 'privsep-helper' in line and 'vgpu_nova_ext' in line
                and (host is None or conf in line)
                and line.split()[2] != 'sudo']

    # -- the guest ----------------------------------------------------------
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
