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
"""The commands log through oslo.log, as OpenStack services do."""

import logging
import os
import subprocess
import sys

from tests.unit import test_cli

SECRET = 'c2VjcmV0LXRva2Vu'
MIG_CONF = ('[devices]\nenabled_mdev_types = nvidia-1414\n'
            '[mdev_nvidia-1414]\ndevice_addresses = 0000:19:00.0\n'
            'mig_gpu_instances = 1g.18gb:7\n')


class TestCommandLogs(test_cli.CLITestCase):

    def nova_conf(self, text):
        path = os.path.join(self.root, 'nova.conf')
        with open(path, 'w') as f:
            f.write(text)
        return path

    def read(self, path):
        with open(path) as f:
            return f.read()

    def test_log_file_and_debug(self):
        log = os.path.join(self.root, 'cli.log')
        code, out, err = self.run_cli(
            '--debug', '--log-file', log, '--simulate', 'h200-vfio',
            '--config-file', self.nova_conf(MIG_CONF), 'inventory')
        self.assertEqual(0, code, err)
        text = self.read(log)
        self.assertIn('INFO vgpu_nova_ext.devices.mig_layout', text)
        self.assertIn('MIG: carving 1g.18gb: 7 on GPU 0000:19:00.0', text)
        # The answer on stdout stays clean.
        self.assertNotIn('mig_layout', out)

    def test_libraries_noise_not_shown(self):
        # What stderr got from libraries on every command (seen in a clean
        # install with Nova 34's upper-constraints): eventlet's deprecation
        # warning at oslo.privsep's import, oslo.service's INFO line once
        # Nova's libvirt driver is imported. tests/release checks stderr of
        # the installed command.
        code, out, err = self.run_cli('--simulate', 'h200-vfio',
                                      '--config-file',
                                      self.nova_conf(MIG_CONF), 'inventory')
        self.assertEqual(0, code, err)
        self.assertFalse(logging.getLogger(
            'oslo_service.backend').isEnabledFor(logging.INFO))
        self.assertTrue(logging.getLogger(
            'oslo_service.backend').isEnabledFor(logging.WARNING))
        # The warning filter, in a process of its own (test runners set
        # filters of their own around each test).
        proc = subprocess.run(
            [sys.executable, '-c',
             'import warnings; import vgpu_nova_ext.cmd; '
             'warnings.warn("\\nEventlet is deprecated. It is currently '
             'being maintained in bugfix mode"); '
             'warnings.warn("something else")'],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(0, proc.returncode, proc.stderr)
        self.assertNotIn('Eventlet', proc.stderr)
        self.assertIn('UserWarning: something else', proc.stderr)

    def test_quiet_without_debug(self):
        log = os.path.join(self.root, 'cli.log')
        code, out, err = self.run_cli(
            '--log-file', log, '--simulate', 'h200-vfio',
            '--config-file', self.nova_conf(MIG_CONF), 'inventory')
        self.assertEqual(0, code, err)
        self.assertNotIn('MIG: carving', self.read(log))

    def test_log_config_append_from_nova_conf(self):
        log = os.path.join(self.root, 'appended.log')
        logging_conf = os.path.join(self.root, 'logging.conf')
        with open(logging_conf, 'w') as f:
            f.write('[loggers]\nkeys = root\n[handlers]\nkeys = file\n'
                    '[formatters]\nkeys = plain\n'
                    '[logger_root]\nlevel = DEBUG\nhandlers = file\n'
                    '[handler_file]\nclass = FileHandler\nformatter = plain\n'
                    'args = (%r,)\n[formatter_plain]\nformat = %%(name)s '
                    '%%(message)s\n' % log)
        code, out, err = self.run_cli(
            '--simulate', 'h200-vfio', '--config-file', self.nova_conf(
                '[DEFAULT]\nlog_config_append = %s\n' % logging_conf
                + MIG_CONF), 'inventory')
        self.assertEqual(0, code, err)
        self.assertIn('vgpu_nova_ext.devices.mig_layout MIG: carving',
                      self.read(log))

    def test_no_token_in_the_log(self):
        token = os.path.join(self.root, 'client.tok')
        with open(token, 'w') as f:
            f.write('eyJhbGciOiJSUzI1NiJ9.%s.c2ln\n' % SECRET)
        os.chmod(token, 0o600)
        log = os.path.join(self.root, 'cli.log')
        code, out, err = self.run_cli(
            '--debug', '--log-file', log, '--simulate', 'm60',
            '--config-file', self.nova_conf(
                '[devices]\nenabled_mdev_types = nvidia-18\n'
                '[vgpu_licensing]\nenabled = true\n'
                'client_config_token_file = %s\n' % token),
            'license', 'render', '--mdev-type', 'nvidia-18')
        self.assertEqual(0, code, err)
        text = self.read(log)
        # The options, as services log them with debug: the token file's
        # path, never its content.
        self.assertIn('vgpu_licensing.client_config_token_file', text)
        self.assertIn(token, text)
        self.assertNotIn(SECRET, text + out + err)

    def test_a_secret_option_is_masked(self):
        log = os.path.join(self.root, 'cli.log')
        code, out, err = self.run_cli(
            '--debug', '--log-file', log, '--simulate', 'm60',
            '--config-file', self.nova_conf(
                '[devices]\nenabled_mdev_types = nvidia-18\n'
                '[placement]\nauth_type = password\npassword = %s\n'
                % SECRET), 'inventory')
        self.assertEqual(0, code, err)
        text = self.read(log)
        self.assertIn('placement.auth_type', text)
        self.assertNotIn(SECRET, text + out + err)

    def test_unreadable_logging_config_is_named(self):
        code, out, err = self.run_cli(
            '--simulate', 'm60', '--config-file', self.nova_conf(
                '[DEFAULT]\nlog_config_append = /nonexistent/logging.conf\n'
                '[devices]\nenabled_mdev_types = nvidia-18\n'),
            'inventory')
        self.assertEqual(2, code)
        self.assertIn('log_config_append = /nonexistent/logging.conf', err)
        self.assertNoTraceback(out, err)
