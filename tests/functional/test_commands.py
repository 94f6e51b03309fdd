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
"""The audit and demo commands, end to end against Placement."""

import json
import os

from tests.functional import base
from tests.unit import test_cli
from vgpu_nova_ext import inventory

HOST = base.HOST


class TestAuditCommand(base.TestCase, test_cli.CLITestCase):

    def config(self, endpoint: str) -> str:
        path = os.path.join(self.tmp, 'nova.conf')
        with open(path, 'w') as f:
            f.write('[devices]\nenabled_mdev_types = nvidia-18, nvidia-22\n'
                    '[mdev_nvidia-18]\ndevice_addresses = 0000:84:00.0\n'
                    '[mdev_nvidia-22]\ndevice_addresses = 0000:85:00.0\n'
                    '[placement]\nauth_type = admin_token\n'
                    'endpoint = %s\ntoken = admin\n' % endpoint)
        os.chmod(path, 0o600)
        return path

    def audit(self, *extra):
        return self.run_cli('--simulate', 'm60', '--host', HOST,
                            '--config-file', self.config(
                                self.placement.endpoint), 'audit', *extra)

    def test_no_drift_exit_0(self):
        self.compute_node()
        self.publisher().sync(self.assignment('m60'))
        code, out, err = self.audit('--format', 'json')
        self.assertEqual(0, code, err)
        self.assertEqual({'host': HOST, 'drift': []}, json.loads(out))
        code, out, _ = self.audit()
        self.assertIn('Placement matches this host', out)

    def test_drift_exit_1(self):
        self.compute_node()
        code, out, _ = self.audit('--format', 'json')
        self.assertEqual(1, code)
        drift = json.loads(out)['drift']
        self.assertEqual({('%s_pci_0000_84_00_0' % HOST, 'missing'),
                          ('%s_pci_0000_85_00_0' % HOST, 'missing')},
                         {(d['provider'], d['kind']) for d in drift})
        expected = drift[0]['expected']
        self.assertEqual({'uuid', 'inventories', 'traits'}, set(expected))
        code, out, _ = self.audit()
        self.assertIn('2 drift(s)', out)
        self.assertIn('missing', out)

    def test_unknown_compute_node_exit_2(self):
        code, out, err = self.audit()
        self.assertEqual(2, code)
        self.assertIn("no compute node provider named 'cn1'", err)
        self.assertNoTraceback(out, err)

    def test_placement_down_exit_2(self):
        endpoint = self.placement.endpoint
        self.placement.server.stop()
        code, out, err = self.run_cli(
            '--simulate', 'm60', '--host', HOST, '--config-file',
            self.config(endpoint), 'audit')
        self.assertEqual(2, code)
        self.assertIn('unreachable', err)
        self.assertNoTraceback(out, err)

    def test_no_placement_options(self):
        code, _, err = self.run_cli('--simulate', 'm60', 'audit')
        self.assertEqual(2, code)
        self.assertIn('--config-file', err)

    def test_token_never_printed(self):
        path = os.path.join(self.tmp, 'secret.conf')
        with open(path, 'w') as f:
            f.write('[placement]\nauth_type = admin_token\n'
                    'endpoint = http://127.0.0.1:9/\ntoken = s3cr3t-t0ken\n')
        code, out, err = self.run_cli('--simulate', 'm60', '--config-file',
                                      path, 'audit')
        self.assertEqual(2, code)
        self.assertNotIn('s3cr3t-t0ken', out + err)


class TestDemoCommand(test_cli.CLITestCase):

    def test_demo_on_every_profile(self):
        for profile in ('v100x8', 'mtty', 'a100-sriov'):
            code, out, err = self.run_cli('--simulate', profile, '--host',
                                          HOST, 'demo')
            self.assertEqual(0, code, err)
            self.assertIn('Placement matches this host', out)
            self.assertIn('GET /allocation_candidates?resources=VGPU:1',
                          out)
            self.assertIn(inventory.provider_name(HOST, 'pci_0000_'
                          if profile != 'mtty' else 'mtty_mtty'), out)
            self.assertIn('unchanged periodic sync: 1 request(s)', out)

    def test_default_demo_pins_a_type(self):
        code, out, _ = self.run_cli('--host', HOST, 'demo')
        self.assertEqual(0, code)
        self.assertIn('required=CUSTOM_VGPU_V100DX_32C\n  2 candidate(s) on '
                      'cn1_pci_0000_b2_00_0, cn1_pci_0000_b3_00_0', out)
