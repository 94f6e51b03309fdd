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
"""The gate job's check (devstack/gate/verify.sh) against a fake node.

No devstack here: the commands the check runs (openstack, sudo, virsh,
isoinfo, hostname, vgpu-nova-ext) are one stub, tests/devstack/fake_node/
fake.py, answering from a described world. The check must pass on a
healthy node and fail on each broken one.
"""

import json
import os
import subprocess

import fixtures

from tests import timeout

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
VERIFY = os.path.join(TOP, 'devstack', 'gate', 'verify.sh')
FAKE = os.path.join(HERE, 'fake_node', 'fake.py')
COMMANDS = ('openstack', 'sudo', 'virsh', 'isoinfo', 'hostname',
            'vgpu-nova-ext', 'curl', 'ps')
PASSWORD = 'devstack-admin-secret'
METADATA_SECRET = 'devstack-metadata-secret'


class TestGateCheck(timeout.TestCase):

    def run_check(self, backend='libvirt', vendordata=True, **world):
        work = self.useFixture(fixtures.TempDir()).path
        bin_dir = os.path.join(work, 'bin')
        devstack = os.path.join(work, 'devstack')
        mdevs = os.path.join(work, 'mdev-devices')
        for path in (bin_dir, devstack, mdevs):
            os.mkdir(path)
        for name in COMMANDS:
            os.symlink(FAKE, os.path.join(bin_dir, name))
        # As devstack's: it selects the cloud (the fake openstack refuses
        # any call without it, as the real one does) and reads variables
        # it may not have.
        with open(os.path.join(devstack, 'openrc'), 'w') as f:
            f.write('[ -n "$UNSET_IN_OPENRC" ] || true\n'
                    'export OS_AUTH_URL=http://127.0.0.1/identity '
                    'OS_USERNAME=$1 OS_PROJECT_NAME=$2 '
                    'OS_PASSWORD=%s\n' % PASSWORD)
        with open(os.path.join(work, 'world.json'), 'w') as f:
            json.dump(world, f)
        with open(os.path.join(work, 'nova.conf'), 'w') as f:
            f.write('[neutron]\nmetadata_proxy_shared_secret = %s\n'
                    % METADATA_SECRET)
            if vendordata:
                f.write('[api]\nvendordata_dynamic_targets = '
                        'cloud-init@http://127.0.0.1:9876/\n')
        with open(os.path.join(work, 'nova-cpu.conf'), 'w') as f:
            f.write('[vgpu_nova_ext]\nhost_backend = %s\n' % backend)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith('OS_')}
        env.update(PATH=bin_dir + os.pathsep + os.environ['PATH'],
                   FAKE_WORLD=work, DEVSTACK_DIR=devstack, MDEV_DEVICES=mdevs,
                   DEVSTACK_VENV=os.path.join(work, 'no-venv'),
                   NOVA_CONF=os.path.join(work, 'nova.conf'),
                   NOVA_CPU_CONF=os.path.join(work, 'nova-cpu.conf'),
                   # The fake's own way to find nova.conf: the check must
                   # not need it exported.
                   FAKE_NOVA_CONF=os.path.join(work, 'nova.conf'))
        return subprocess.run(['bash', VERIFY], env=env, capture_output=True,
                              text=True, timeout=60)

    def assertFails(self, proc, why=None):
        self.assertNotEqual(0, proc.returncode, proc.stderr)
        self.assertNotIn('unexpected command', proc.stderr)
        if why:
            self.assertIn(why, proc.stderr)

    def test_healthy_node_passes(self):
        proc = self.run_check()
        self.assertEqual(0, proc.returncode, proc.stderr)
        # The check traces its commands (set -x) but not openrc's, nor
        # the metadata secret.
        self.assertIn('+ openstack server create', proc.stderr)
        self.assertNotIn(PASSWORD, proc.stdout + proc.stderr)
        self.assertNotIn(METADATA_SECRET, proc.stdout + proc.stderr)

    def test_sysfs_backend_healthy_node_passes(self):
        proc = self.run_check(backend='sysfs')
        self.assertEqual(0, proc.returncode, proc.stderr)

    def test_no_licensing_in_the_vendor_data(self):
        self.assertFails(self.run_check(licensed=False),
                         'no licensing cloud-config')
        # Without the vendordata service (VGPU_NOVA_EXT_VENDORDATA=False)
        # there is no vendor data to check.
        proc = self.run_check(vendordata=False, licensed=False)
        self.assertEqual(0, proc.returncode, proc.stderr)

    def test_ownership_audit_fails(self):
        self.assertFails(self.run_check(audit=False), 'owner.not_in_domain')

    def test_sysfs_backend_without_its_privsep_daemon(self):
        self.assertFails(self.run_check(backend='sysfs', daemon=False),
                         'no privsep daemon of vgpu-nova-ext running as root')
        # The libvirt backend makes mtty devices through libvirt: no daemon
        # is expected there.
        proc = self.run_check(daemon=False)
        self.assertEqual(0, proc.returncode, proc.stderr)

    def test_server_not_active(self):
        self.assertFails(self.run_check(status='ERROR'))

    def test_vgpu_on_the_compute_node_itself(self):
        self.assertFails(self.run_check(vgpu_on_root=True))

    def test_device_not_in_the_domain(self):
        self.assertFails(self.run_check(in_domain=False))

    def test_no_licensing_files_on_the_config_drive(self):
        self.assertFails(self.run_check(files=False), 'gridd.conf')

    def test_device_not_freed(self):
        self.assertFails(self.run_check(freed=False), 'was not freed')
