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
import base64
import contextlib
import io
import json
import os
import subprocess
import sys

import fixtures
import yaml

from tests import logs as test_logs
from tests.unit import base
from tests.unit import test_sysfs
from vgpu_nova_ext.cmd import cli
from vgpu_nova_ext.host import privsep
from vgpu_nova_ext.host import simulated

PROVIDER_KEYS = {'name', 'uuid', 'parent', 'device_address', 'mdev_type',
                 'type_name', 'resource_class', 'total', 'used', 'traits'}


class CLITestCase(base.TestCase):

    def setUp(self):
        super().setUp()
        self.useFixture(test_logs.CommandLogging())
        # A command sets oslo.privsep's root helper for the process: back
        # to oslo.privsep's own after each test.
        self.addCleanup(privsep.use_root_helper, ['sudo'])

    def run_cli(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(argv))
            except SystemExit as exc:
                code = exc.code
        return code, out.getvalue(), err.getvalue()

    def mig_host(self, profile: str, type_id: str, gpu: str,
                 layout: str) -> tuple[str, ...]:
        """A command's arguments on a simulated MIG host with a layout.

        Its nova.conf declares ``layout`` for ``type_id`` on ``gpu``.
        """
        conf = os.path.join(self.root, 'nova.conf')
        with open(conf, 'w') as f:
            f.write('[devices]\nenabled_mdev_types = %s\n[mdev_%s]\n'
                    'device_addresses = %s\nmig_gpu_instances = %s\n' % (
                        type_id, type_id, gpu, layout))
        return ('--simulate', profile, '--config-file', conf,
                '--state-path', os.path.join(self.root, 'state'))

    def assertNoTraceback(self, *texts):
        for text in texts:
            self.assertNotIn('Traceback', text)


class TestInventory(CLITestCase):

    def test_json_for_every_builtin_profile(self):
        for name in simulated.builtin_profiles():
            code, out, err = self.run_cli('--simulate', name, '--host', 'cn1',
                                          'inventory', '--format', 'json')
            self.assertEqual(0, code, err)
            data = json.loads(out)
            self.assertEqual({'host', 'providers', 'problems',
                              'gpu_instances', 'vgpu_schedulers'}, set(data))
            self.assertEqual('cn1', data['host'])
            self.assertTrue(data['providers'], name)
            for provider in data['providers']:
                self.assertEqual(PROVIDER_KEYS, set(provider), name)
                self.assertTrue(provider['name'].startswith('cn1_'))
                self.assertEqual('cn1', provider['parent'])
                self.assertGreater(provider['total'], 0)
                self.assertIn('OWNER_NOVA', provider['traits'])

    def test_v100_figures(self):
        code, out, _ = self.run_cli('--simulate', 'v100x8', '--host', 'cn1',
                                    'inventory', '--format', 'json')
        data = json.loads(out)
        by_name = {p['name']: p for p in data['providers']}
        gpu5 = by_name['cn1_pci_0000_89_00_0']
        self.assertEqual(('0000:89:00.0', 'nvidia-197', 'GRID V100DX-8Q',
                          'VGPU', 4, 1),
                         (gpu5['device_address'], gpu5['mdev_type'],
                          gpu5['type_name'], gpu5['resource_class'],
                          gpu5['total'], gpu5['used']))
        self.assertEqual('nvidia-318',
                         by_name['cn1_pci_0000_b3_00_0']['mdev_type'])
        self.assertEqual(26, sum(p['total'] for p in data['providers']))

    def test_sriov_provider_is_the_physical_function(self):
        _, out, _ = self.run_cli('--simulate', 'a100-sriov', '--host', 'cn1',
                                 'inventory', '--format', 'json')
        names = [p['name'] for p in json.loads(out)['providers']]
        self.assertEqual(['cn1_pci_0000_41_00_0', 'cn1_pci_0000_61_00_0',
                          'cn1_pci_0000_a1_00_0', 'cn1_pci_0000_c1_00_0'],
                         names)

    def test_mtty(self):
        _, out, _ = self.run_cli('--simulate', 'mtty', '--host', 'cn1',
                                 'inventory', '--format', 'json')
        (provider,) = json.loads(out)['providers']
        self.assertEqual(('cn1_mtty_mtty', 'mtty_mtty'),
                         (provider['name'], provider['device_address']))

    def test_table(self):
        code, out, _ = self.run_cli('--simulate', 'm60', '--host', 'cn1',
                                    'inventory')
        self.assertEqual(0, code)
        lines = out.splitlines()
        header = next(line for line in lines if line.startswith('PROVIDER'))
        row = next(line for line in lines
                   if line.startswith('cn1_pci_0000_84'))
        # Columns line up under their headers.
        self.assertEqual(header.index('TYPE'), row.index('nvidia-18'))
        self.assertIn('5 VGPU', out)

    def test_config_errors_exit_2_with_problems(self):
        conf = self.write_config("""
            [devices]
            enabled_mdev_types = nvidia-18
            [mdev_nvidia-18]
            device_addresses = zz:00
            """)
        code, out, _ = self.run_cli('--simulate', 'm60', '--config-file',
                                    conf, 'inventory', '--format', 'json')
        self.assertEqual(2, code)
        problems = json.loads(out)['problems']
        self.assertEqual('address.malformed', problems[0]['code'])
        self.assertEqual({'severity', 'code', 'where', 'value', 'why',
                          'fix', 'option', 'message'}, set(problems[0]))
        # The keys before one finding type, kept for scripts until 3.0.
        self.assertEqual(problems[0]['where'], problems[0]['option'])
        self.assertEqual(problems[0]['why'], problems[0]['message'])

    def test_real_sysfs_tree(self):
        test_sysfs.v100_host(self.root)
        conf = self.write_config("""
            [devices]
            enabled_vgpu_types = nvidia-197
            """)
        code, out, err = self.run_cli('--sysfs-root', self.root,
                                      '--config-file', conf, '--host', 'h',
                                      'inventory', '--format', 'json')
        self.assertEqual(0, code, err)
        (provider,) = json.loads(out)['providers']
        self.assertEqual(('h_pci_0000_89_00_0', 4, 1),
                         (provider['name'], provider['total'],
                          provider['used']))

    def test_default_host_name(self):
        _, out, _ = self.run_cli('--simulate', 'mtty', 'inventory',
                                 '--format', 'json')
        host = json.loads(out)['host']
        self.assertTrue(host)
        self.assertTrue(host.startswith(os.uname().nodename.split('.')[0]))


class TestCheck(CLITestCase):

    def test_clean(self):
        code, out, _ = self.run_cli('--simulate', 'm60', 'check')
        self.assertEqual(0, code)
        self.assertIn('OK       0000:84:00.0', out)
        self.assertIn('(exit 0)', out)

    def test_warnings_exit_1(self):
        conf = self.write_config("""
            [devices]
            enabled_mdev_types = nvidia-18

            [mdev_nvidia-18]
            device_addresses = 0000:84:00.0, 0000:99:00.0
            """)
        code, out, _ = self.run_cli('--simulate', 'm60', '--config-file',
                                    conf, 'check')
        self.assertEqual(1, code)
        warning = next(line for line in out.splitlines()
                       if line.startswith('WARNING'))
        self.assertIn('[mdev_nvidia-18] device_addresses = 0000:99:00.0',
                      warning)
        self.assertIn('Fix:', warning)

    def test_errors_exit_2(self):
        conf = self.write_config("""
            [devices]
            enabled_mdev_types = nvidia-18, nvidia-22

            [mdev_nvidia-18]
            device_addresses = 0000:84:00.0

            [mdev_nvidia-22]
            device_addresses = 84:00.0
            """)
        code, out, _ = self.run_cli('--simulate', 'm60', '--config-file',
                                    conf, 'check')
        self.assertEqual(2, code)
        errors = [line for line in out.splitlines()
                  if line.startswith('ERROR')]
        self.assertEqual(1, len(errors))
        self.assertIn('Fix:', errors[0])

    def test_max_instances_spread_is_shown(self):
        conf = self.write_config("""
            [devices]
            enabled_mdev_types = nvidia-197

            [mdev_nvidia-197]
            max_instances = 6
            """)
        code, out, _ = self.run_cli('--simulate', 'v100x8', '--config-file',
                                    conf, 'check')
        self.assertIn('NOTE     [mdev_nvidia-197] max_instances = 6 spread '
                      'over 8 GPU(s)', out)
        self.assertNotIn('ERROR', out)

    def test_bad_config_value(self):
        conf = self.write_config("""
            [devices]
            enabled_mdev_types = nvidia-18

            [mdev_nvidia-18]
            max_instances = lots
            """)
        code, out, err = self.run_cli('--simulate', 'm60', '--config-file',
                                      conf, 'check')
        self.assertEqual(2, code)
        self.assertIn('[mdev_nvidia-18] max_instances', out)
        self.assertNoTraceback(out, err)


class TestBadInputs(CLITestCase):

    def assertFails(self, *argv, expect):
        code, out, err = self.run_cli(*argv)
        self.assertEqual(2, code)
        self.assertIn(expect, err)
        self.assertNoTraceback(out, err)

    def test_missing_config_file(self):
        self.assertFails('--simulate', 'm60', '--config-file',
                         '/nonexistent/nova.conf', 'inventory',
                         expect='/nonexistent/nova.conf')

    def test_unparsable_config_file(self):
        conf = self.write_config('[devices\nenabled_mdev_types = x\n')
        self.assertFails('--simulate', 'm60', '--config-file', conf,
                         'inventory', expect='cannot parse')

    def test_unknown_profile(self):
        self.assertFails('--simulate', 'h100', 'inventory',
                         expect='no built-in simulated host profile')

    def test_bad_profile_file(self):
        path = os.path.join(self.root, 'host.yaml')
        with open(path, 'w') as f:
            f.write('gpus: 3\n')
        self.assertFails('--simulate', path, 'inventory', expect=path)

    def test_sysfs_root_without_sys(self):
        self.assertFails('--sysfs-root', self.root, 'inventory',
                         expect='has no sys/ directory')

    def test_malformed_sysfs_entry(self):
        t = test_sysfs.v100_host(self.root)
        with open(os.path.join(t.sys, test_sysfs.GPU5, 'mdev_supported_types',
                               'nvidia-197', 'available_instances'),
                  'w') as f:
            f.write('?\n')
        self.assertFails('--sysfs-root', self.root, 'inventory',
                         expect='available_instances')

    def test_usage_errors(self):
        code, _, err = self.run_cli('--simulate', 'm60', '--sysfs-root', '/',
                                    'inventory')
        self.assertEqual(2, code)
        self.assertIn('not allowed with', err)
        code, _, _ = self.run_cli()
        self.assertEqual(2, code)


class TestConsoleScript(base.TestCase):

    def test_installed_entry_point(self):
        script = os.path.join(os.path.dirname(sys.executable),
                              'vgpu-nova-ext')
        if not os.path.exists(script):
            self.skipTest('package not installed in this environment')
        proc = subprocess.run([script, '--simulate', 'mtty', '--host', 'cn1',
                               'inventory', '--format', 'json'],
                              capture_output=True, text=True, timeout=60)
        self.assertEqual(0, proc.returncode, proc.stderr)
        self.assertEqual('cn1', json.loads(proc.stdout)['host'])


class TestNovaWiring(CLITestCase):

    def test_driver_not_configured_is_a_warning(self):
        conf = self.write_config("""
            [DEFAULT]
            compute_driver = libvirt.LibvirtDriver
            [devices]
            enabled_mdev_types = nvidia-18
            """)
        code, out, _ = self.run_cli('--simulate', 'm60', '--config-file',
                                    conf, 'check')
        self.assertEqual(1, code)
        self.assertIn('compute_driver = libvirt.LibvirtDriver', out)
        self.assertIn('vgpu_nova_ext_driver.LibvirtVGPUDriver', out)

    def test_driver_configured_without_nova_here_is_an_error(self):
        try:
            import nova  # noqa: F401
            self.skipTest('nova is importable in this environment')
        except ImportError:
            pass
        conf = self.write_config("""
            [DEFAULT]
            compute_driver = vgpu_nova_ext_driver.LibvirtVGPUDriver
            [devices]
            enabled_mdev_types = nvidia-18
            """)
        code, out, _ = self.run_cli('--simulate', 'm60', '--config-file',
                                    conf, 'check')
        self.assertEqual(2, code)
        self.assertIn("nova-compute's own environment", out)


class TestDevicesAndReconcile(CLITestCase):

    def setUp(self):
        super().setUp()
        self.state = os.path.join(self.root, 'state')
        self.common = ('--simulate', 'm60', '--host', 'cn1', '--state-path',
                       self.state)

    def allocator(self):
        from vgpu_nova_ext.cmd import common as cmd_common
        args = cli.build_parser().parse_args(list(self.common) + ['devices'])
        plan = cmd_common.build_plan(args)
        return cmd_common.allocator(args, plan)

    def test_devices_show_owner_and_state(self):
        with self.allocator() as al:
            rp = next(iter(al.targets))
            claim = al.claim('inst-1', {rp: {'resources': {'VGPU': 1}}})
        code, out, err = self.run_cli(*self.common, 'devices', '--format',
                                      'json')
        self.assertEqual(0, code, err)
        (row,) = json.loads(out)['devices']
        self.assertEqual({'device': claim.devices[0].device_id,
                          'kind': 'mdev', 'gpu': 'pci_0000_84_00_0',
                          'parent': 'pci_0000_84_00_0', 'type': 'nvidia-18',
                          'owner': 'inst-1', 'ledger': 'active',
                          'host': 'present', 'gpu_instance': None,
                          'vgpu_params': ''}, row)
        code, out, _ = self.run_cli(*self.common, 'devices')
        self.assertIn('inst-1', out)
        self.assertNotIn('VGPU PARAMS', out)
        # The guest's flavor set some: devices shows what the device holds.
        with self.allocator() as al:
            al.backend.set_vgpu_params('mdev', claim.devices[0].device_id,
                                       (('frame_rate_limiter', '0'),))
        code, out, err = self.run_cli(*self.common, 'devices', '--format',
                                      'json')
        (row,) = json.loads(out)['devices']
        self.assertEqual('frame_rate_limiter=0', row['vgpu_params'])
        code, out, _ = self.run_cli(*self.common, 'devices')
        self.assertIn('VGPU PARAMS', out)
        self.assertIn('frame_rate_limiter=0', out)

    def test_every_command_reads_the_kept_host(self):
        # Three vGPUs on the host kept in --state-path: inventory and
        # metrics see them as devices does (each built a fresh host from
        # the profile before, USED 0).
        gpu = 'cn1_pci_0000_84_00_0'
        with self.allocator() as al:
            (rp,) = [uuid for uuid, target in al.targets.items()
                     if target.gpu == 'pci_0000_84_00_0']
            for n in range(3):
                al.claim('inst-%d' % n, {rp: {'resources': {'VGPU': 1}}})
        _, out, _ = self.run_cli(*self.common, 'devices', '--format', 'json')
        self.assertEqual(3, len(json.loads(out)['devices']))
        code, out, err = self.run_cli(*self.common, 'inventory', '--format',
                                      'json')
        self.assertEqual(0, code, err)
        self.assertEqual({gpu: 3, 'cn1_pci_0000_85_00_0': 0}, {
            p['name']: p['used'] for p in json.loads(out)['providers']})
        code, out, _ = self.run_cli(*self.common, 'metrics')
        self.assertEqual(0, code)
        self.assertIn('vgpu_nova_ext_up 1.0', out)
        self.assertIn('provider="%s",resource_class="VGPU",type="nvidia-18",'
                      'type_name="GRID M60-2Q"} 3.0' % gpu, out)

    def test_reconcile_after_reboot(self):
        with self.allocator() as al:
            rp = next(iter(al.targets))
            device = al.claim('inst-1', {rp: {'resources': {'VGPU': 1}}}) \
                .devices[0].device_id
            al.backend.remove_device(device)      # a reboot
        code, out, _ = self.run_cli(*self.common, 'reconcile', '--dry-run')
        self.assertEqual(0, code)
        self.assertIn('would recreate', out)
        _, out, _ = self.run_cli(*self.common, 'devices', '--format', 'json')
        self.assertEqual('missing', json.loads(out)['devices'][0]['host'])
        code, out, _ = self.run_cli(*self.common, 'reconcile')
        self.assertIn('did   recreate', out)
        _, out, _ = self.run_cli(*self.common, 'devices', '--format', 'json')
        self.assertEqual('present', json.loads(out)['devices'][0]['host'])
        _, out, _ = self.run_cli(*self.common, 'reconcile')
        self.assertIn('nothing to do', out)

    def test_bring_up_after_a_reboot(self):
        # An A100 host (mdevs on VFs): the reboot takes the VFs too.
        self.common = ('--simulate', 'a100-sriov', '--host', 'cn1',
                       '--state-path', self.state)
        with self.allocator() as al:
            rp = next(iter(al.targets))
            claimed = al.claim('inst-1', {rp: {'resources': {'VGPU': 1}}})
            (device,) = [d.device_id for d in claimed.devices]
            al.backend.reboot()
        # check says what the next start does, and changes nothing.
        _, out, _ = self.run_cli(*self.common, 'check')
        self.assertEqual(4, out.count('BRING-UP '))
        self.assertIn('enabled at nova-compute\'s next start', out)
        code, out, err = self.run_cli(*self.common, 'bring-up', '--dry-run')
        self.assertEqual(0, code, err)
        self.assertIn('would enable-vfs', out)
        self.assertIn('would recreate', out)
        _, out, _ = self.run_cli(*self.common, 'devices', '--format', 'json')
        (row,) = [r for r in json.loads(out)['devices']
                  if r['device'] == device]
        self.assertEqual('missing', row['host'])
        code, out, err = self.run_cli(*self.common, 'bring-up')
        self.assertEqual(0, code, err)
        self.assertEqual(4, out.count('did   enable-vfs'))
        self.assertIn('did   recreate       %s' % device, out)
        _, out, _ = self.run_cli(*self.common, 'devices', '--format', 'json')
        (row,) = [r for r in json.loads(out)['devices']
                  if r['device'] == device]
        self.assertEqual(('present', 'inst-1'), (row['host'], row['owner']))
        # Again: nothing to do (nova-compute's start after the unit).
        code, out, _ = self.run_cli(*self.common, 'bring-up')
        self.assertEqual((0, ''), (code, ''.join(
            line for line in out.splitlines(True)
            if line.startswith('did'))))

    def test_bring_up_names_a_gpu_that_does_not_come_back(self):
        self.common = ('--simulate', 'a100-sriov', '--host', 'cn1',
                       '--state-path', self.state)
        with self.allocator() as al:
            al.backend.reboot()
            faults = os.path.join(al.backend.root, '.faults',
                                  'sriov_manage')
        os.makedirs(faults)
        with open(os.path.join(faults, '0000:41:00.0'), 'w') as f:
            f.write('always')
        self.useFixture(fixtures.MockPatch(
            'vgpu_nova_ext.devices.bring_up.BACKOFF', (0.0,)))
        code, out, _ = self.run_cli(*self.common, 'bring-up')
        self.assertEqual(1, code)
        self.assertEqual(3, out.count('did   enable-vfs'))
        self.assertNotIn('enable-vfs     0000:41:00.0', out)
        self.assertIn('leave gpu.bring_up_failed host GPU 0000:41:00.0', out)
        self.assertIn('2 tries of sriov-manage -e', out)

    def test_remove_foreign_takes_only_the_host_s_devices(self):
        foreign = '1f0e4a3c-2b5d-4c6e-8f70-9a1b2c3d4e5f'
        with self.allocator() as al:
            rp = next(iter(al.targets))
            device = al.claim('inst-1', {rp: {'resources': {'VGPU': 1}}}) \
                .devices[0].device_id
            al.backend.create_device(
                'pci_0000_85_00_0', 'nvidia-18', foreign)
            al.backend.remove_device(device)      # a reboot, too
        # A path where a device id goes reaches nothing (on a real host,
        # the GPU's own PCI remove attribute): refused, nothing changed,
        # not even the reconcile.
        bad = '../../pci/devices/0000:84:00.0'
        code, out, err = self.run_cli(*self.common, 'reconcile',
                                      '--remove-foreign', foreign, bad)
        self.assertEqual(2, code)
        self.assertIn(repr(bad), err)
        self.assertIn('nothing was removed', err)
        self.assertNoTraceback(out, err)
        _, out, _ = self.run_cli(*self.common, 'devices', '--format', 'json')
        hosts = {r['device']: r['host'] for r in json.loads(out)['devices']}
        self.assertEqual({device: 'missing', foreign: 'present'}, hosts)
        code, out, err = self.run_cli(*self.common, 'reconcile',
                                      '--remove-foreign', foreign)
        self.assertEqual(0, code, err)
        self.assertIn('did   remove-foreign %s' % foreign, out)
        self.assertIn('did   recreate', out)

    def test_unwritable_state_path(self):
        code, out, err = self.run_cli('--simulate', 'm60', '--state-path',
                                      '/proc/nope', 'devices')
        self.assertEqual(2, code)
        self.assertIn('state_path', err)
        self.assertNoTraceback(out, err)


class TestLicenseCommands(CLITestCase):

    def config(self, token_mode=0o600, extra=''):
        token = os.path.join(self.root, 'client.tok')
        with open(token, 'wb') as f:
            f.write(b'eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2Vu.c2ln\n')
        os.chmod(token, token_mode)
        return self.write_config("""
            [devices]
            enabled_mdev_types = nvidia-18, nvidia-22
            [mdev_nvidia-18]
            device_addresses = 0000:84:00.0
            [mdev_nvidia-22]
            device_addresses = 0000:85:00.0
            feature_type = 4
            [vgpu_licensing]
            enabled = true
            client_config_token_file = %s
            %s
            """ % (token, extra))

    def test_render_shows_a_fingerprint_not_the_token(self):
        code, out, err = self.run_cli('--simulate', 'm60', '--config-file',
                                      self.config(), 'license', 'render',
                                      '--mdev-type', 'nvidia-22')
        self.assertEqual(0, code, err)
        self.assertIn('FeatureType=4', out)
        self.assertIn('sha256:', out)
        self.assertNotIn('c2VjcmV0LXRva2Vu', out + err)
        code, out, _ = self.run_cli('--simulate', 'm60', '--config-file',
                                    self.config(), 'license', 'render',
                                    '--mdev-type', 'nvidia-18', '--os',
                                    'windows')
        self.assertIn('GridLicensing', out)
        self.assertNotIn('c2VjcmV0LXRva2Vu', out)

    def test_render_for_the_gpu_operator(self):
        # The tenant's metadata asks for the GPU Operator's Secret: shown
        # with the token's fingerprint, never the token.
        code, out, err = self.run_cli(
            '--simulate', 'm60', '--config-file', self.config(), 'license',
            'render', '--mdev-type', 'nvidia-18', '--metadata',
            'vgpu_nova_ext:gpu_operator=vgpu-ops')
        self.assertEqual(0, code, err)
        shown = out.split('--- /etc/nvidia/gpu-operator/licensing-config.'
                          'yaml (mode 0600)\n', 1)[1].split('\n---', 1)[0]
        manifest = yaml.safe_load(shown)
        self.assertEqual(('Secret', 'licensing-config', 'vgpu-ops'), (
            manifest['kind'], manifest['metadata']['name'],
            manifest['metadata']['namespace']))
        self.assertIn('FeatureType=1', base64.b64decode(
            manifest['data']['gridd.conf']).decode())
        self.assertRegex(manifest['data']['client_configuration_token.tok'],
                         r'^<the client configuration token, sha256:')
        self.assertIn('driver.licensingConfig.secretName=licensing-config',
                      shown)
        self.assertIn('driver.licensingConfig.nlsEnabled=true', shown)
        self.assertNotIn('c2VjcmV0LXRva2Vu', out + err)
        self.assertNotIn(base64.b64encode(b'eyJhbGciOiJSUzI1NiJ9').decode(),
                         out + err)
        # Without the metadata, no manifest; a wrong namespace is named
        # on stderr, and the rest is still shown.
        code, out, err = self.run_cli(
            '--simulate', 'm60', '--config-file', self.config(), 'license',
            'render', '--mdev-type', 'nvidia-18')
        self.assertNotIn('gpu-operator', out)
        code, out, err = self.run_cli(
            '--simulate', 'm60', '--config-file', self.config(), 'license',
            'render', '--mdev-type', 'nvidia-18', '--metadata',
            'vgpu_nova_ext:gpu_operator=Bad_NS')
        self.assertEqual(0, code, err)
        self.assertIn("vgpu_nova_ext:gpu_operator = 'Bad_NS'", err)
        self.assertNotIn('gpu-operator/licensing-config', out)
        self.assertIn('/etc/nvidia/gridd.conf', out)
        code, out, err = self.run_cli(
            '--simulate', 'm60', '--config-file', self.config(), 'license',
            'render', '--mdev-type', 'nvidia-18', '--metadata', 'novalue')
        self.assertEqual(2, code)
        self.assertIn('KEY=VALUE', err)

    def test_bad_licensing_config(self):
        conf = self.config(extra='server_address = not a host')
        code, out, err = self.run_cli('--simulate', 'm60', '--config-file',
                                      conf, 'license', 'render',
                                      '--mdev-type', 'nvidia-18')
        self.assertEqual(2, code)
        self.assertIn('server_address', err)
        self.assertNoTraceback(out, err)

    def test_check_warns_on_an_open_token_and_no_delivery(self):
        code, out, _ = self.run_cli('--simulate', 'm60', '--config-file',
                                    self.config(token_mode=0o644), 'check')
        self.assertEqual(1, code)
        self.assertIn('token file is open to others', out)
        self.assertIn('gets no licensing', out)
        self.assertNotIn('c2VjcmV0LXRva2Vu', out)

    def test_check_quiet_when_delivered_and_private(self):
        conf = self.config(
            extra='[DEFAULT]\n            force_config_drive = true')
        code, out, _ = self.run_cli('--simulate', 'm60', '--config-file',
                                    conf, 'check')
        self.assertNotIn('licensing', out)
        self.assertNotIn('token', out)

    def test_check_errors_when_enabled_without_token_or_server(self):
        conf = self.write_config("""
            [devices]
            enabled_mdev_types = nvidia-18
            [vgpu_licensing]
            enabled = true
            [DEFAULT]
            force_config_drive = true
            """)
        code, out, _ = self.run_cli('--simulate', 'm60', '--config-file',
                                    conf, 'check')
        self.assertEqual(2, code)
        self.assertIn('needs client_config_token_file', out)
