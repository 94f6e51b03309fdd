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
import configparser
import io
import logging
import os
import shutil
import subprocess

import fixtures
import yaml

from tests import timeout
from vgpu_nova_ext import exception
from vgpu_nova_ext.licensing import render as licensing_render
from vgpu_nova_ext.licensing import settings as licensing
from vgpu_nova_ext.vendors import nvidia_licensing
from vgpu_nova_ext.vendors import types as vendor_types

TOKEN = (b'eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJsaWNlbnNlIjoidGVzdCJ9.'
         b'c2lnbmF0dXJl')


def settings(**kwargs) -> vendor_types.LicensingSettings:
    kwargs.setdefault('enabled', True)
    kwargs.setdefault('token', vendor_types.Secret(TOKEN))
    return vendor_types.LicensingSettings(**kwargs)


def parse_gridd(text: str) -> dict:
    parser = configparser.ConfigParser()
    parser.optionxform = str
    parser.read_string('[gridd]\n' + text)
    return dict(parser['gridd'])


class TestGriddConf(timeout.TestCase):

    def test_fields_read_back(self):
        conf = parse_gridd(nvidia_licensing.gridd_conf(settings(
            server_address='license.example.org', server_port=7071,
            backup_server_address='10.0.0.5', backup_server_port=7072,
            feature_type='2', license_interval=60, linger_interval=5,
            enable_ui=True), 'nvidia-18'))
        self.assertEqual({'ServerAddress': 'license.example.org',
                          'ServerPort': '7071',
                          'BackupServerAddress': '10.0.0.5',
                          'BackupServerPort': '7072', 'FeatureType': '2',
                          'EnableUI': 'TRUE', 'LicenseInterval': '60',
                          'LingerInterval': '5'}, conf)

    def test_token_only(self):
        conf = parse_gridd(nvidia_licensing.gridd_conf(settings(),
                                                       'nvidia-18'))
        self.assertEqual({'FeatureType': '1', 'EnableUI': 'FALSE'}, conf)

    def test_feature_type_auto_and_per_type(self):
        s = settings(type_feature_types=(('nvidia-318', '4'),))
        self.assertEqual(1, nvidia_licensing.feature_type(s, 'nvidia-197'))
        self.assertEqual(4, nvidia_licensing.feature_type(s, 'nvidia-318'))
        s = settings(feature_type='2')
        self.assertEqual(2, nvidia_licensing.feature_type(s, 'nvidia-197'))


class TestLinuxDelivery(timeout.TestCase):

    def test_config_drive_files(self):
        files = dict(licensing_render.config_drive_files(
            settings(), ['nvidia-18'], 'linux'))
        self.assertEqual(
            {'/etc/nvidia/gridd.conf',
             '/etc/nvidia/ClientConfigToken/client_configuration_token.tok'},
            set(files))
        self.assertEqual(TOKEN, files['/etc/nvidia/ClientConfigToken/'
                                      'client_configuration_token.tok'])

    def test_nothing_without_vgpu_or_when_disabled(self):
        self.assertEqual([], licensing_render.config_drive_files(
            settings(), [], 'linux'))
        self.assertEqual([], licensing_render.config_drive_files(
            settings(enabled=False), ['nvidia-18'], 'linux'))

    def test_cloud_config_writes_files_with_nvidia_modes(self):
        text = licensing_render.cloud_config(settings(), 'nvidia-18')
        self.assertTrue(text.startswith('#cloud-config\n'))
        document = yaml.safe_load(text)
        by_path = {f['path']: f for f in document['write_files']}
        token = by_path['/etc/nvidia/ClientConfigToken/'
                        'client_configuration_token.tok']
        self.assertEqual('0744', token['permissions'])
        self.assertEqual(TOKEN, base64.b64decode(token['content']))
        gridd = base64.b64decode(by_path['/etc/nvidia/gridd.conf']['content'])
        self.assertEqual('1', parse_gridd(gridd.decode())['FeatureType'])
        self.assertIn('nvidia-gridd', ' '.join(document['runcmd'][0]))

    def test_cloud_config_valid_for_cloud_init(self):
        cloud_init = shutil.which('cloud-init')
        if cloud_init is None:
            message = ('cloud-init is not installed (apt-get install '
                       'cloud-init)')
            if os.environ.get('VGPU_NOVA_EXT_REQUIRE_SCHEMAS'):
                self.fail(message)
            self.skipTest(message)
        path = self.useFixture(fixtures.TempDir()).join('vendor.yaml')
        for text in (licensing_render.cloud_config(settings(), 'nvidia-18'),
                     licensing_render.cloud_config(settings(
                         token=None, server_address='10.1.2.3'), None)):
            with open(path, 'w') as f:
                f.write(text)
            proc = subprocess.run([cloud_init, 'schema', '--config-file',
                                   path], capture_output=True, text=True,
                                  timeout=120)
            self.assertEqual(0, proc.returncode, proc.stdout + proc.stderr)
            self.assertIn('Valid', proc.stdout + proc.stderr)
        # And the check can fail.
        with open(path, 'w') as f:
            f.write('#cloud-config\nwrite_files: [{permissions: 1}]\n')
        proc = subprocess.run([cloud_init, 'schema', '--config-file', path],
                              capture_output=True, text=True, timeout=120)
        self.assertNotEqual(0, proc.returncode)


class TestWindowsDelivery(timeout.TestCase):

    def test_script_and_token_side_by_side(self):
        files = dict(licensing_render.config_drive_files(settings(
            server_address='10.0.0.1', license_interval=30), ['nvidia-18'],
            'Windows'))
        script = files['/vgpu-nova-ext/windows/apply-licensing.ps1'].decode()
        self.assertEqual(TOKEN, files['/vgpu-nova-ext/windows/'
                                      'client_configuration_token.tok'])
        self.assertIn("Services\\nvlddmkm\\Global\\GridLicensing", script)
        self.assertIn('-Name FeatureType -PropertyType DWord -Value 1',
                      script)
        self.assertIn("-Name ServerAddress -PropertyType String -Value "
                      "'10.0.0.1'", script)
        self.assertIn('-Name LicenseInterval -PropertyType DWord -Value 30',
                      script)
        self.assertIn('-Name NvCplDisableManageLicensePage -PropertyType '
                      'DWord -Value 1', script)
        self.assertIn('vGPU Licensing\\ClientConfigToken', script)
        self.assertNotIn(TOKEN.decode(), script)


class TestValidation(timeout.TestCase):

    def assertProblem(self, fragment, **kwargs):
        problems = licensing.validate(settings(**kwargs))
        self.assertTrue(any(fragment in p for p in problems), problems)
        self.assertRaises(exception.ConfigError, licensing_render.cloud_config,
                          settings(**kwargs), 'nvidia-18')

    def test_enabled_needs_a_token_or_a_server(self):
        self.assertProblem('needs client_config_token_file', token=None)

    def test_bad_values(self):
        self.assertProblem('server_address', server_address='a b')
        self.assertProblem('control character',
                           server_address='host\nServerPort=1')
        self.assertProblem('backup_server_address',
                           backup_server_address='-bad-')
        self.assertProblem('server_port', server_port=70000)
        self.assertProblem('feature_type', feature_type='3')
        self.assertProblem('[mdev_nvidia-18] feature_type',
                           type_feature_types=(('nvidia-18', 'x'),))

    def test_good_addresses(self):
        for value in ('10.0.0.1', 'fd00::1', 'nls.example.com',
                      'license-server'):
            self.assertEqual([], licensing.validate(settings(
                server_address=value)), value)


class TestToken(timeout.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path

    def write(self, content: bytes) -> str:
        path = os.path.join(self.dir, 'client.tok')
        with open(path, 'wb') as f:
            f.write(content)
        return path

    def test_read_strips_the_newline(self):
        self.assertEqual(vendor_types.Secret(TOKEN),
                         licensing.read_token(self.write(TOKEN + b'\n')))

    def test_bad_files_never_echo_the_content(self):
        for content in (b'', b'two words', b'\xff\xfe' + TOKEN,
                        TOKEN + b'\n' + TOKEN, b'x' * 70000):
            exc = self.assertRaises(exception.ConfigError,
                                    licensing.read_token,
                                    self.write(content))
            self.assertIn('client_config_token_file', str(exc))
            if content:
                self.assertNotIn(content[:20].decode('latin-1'), str(exc))

    def test_missing_file(self):
        exc = self.assertRaises(exception.ConfigError, licensing.read_token,
                                os.path.join(self.dir, 'nope.tok'))
        self.assertIn('nope.tok', str(exc))

    def test_secret_shows_a_fingerprint_only(self):
        secret = vendor_types.Secret(TOKEN)
        for shown in (repr(secret), str(secret), repr(settings()),
                      str(settings())):
            self.assertNotIn(TOKEN.decode()[:12], shown)
            self.assertIn('sha256:', shown)

    def test_never_in_logs(self):
        logger = self.useFixture(fixtures.FakeLogger(level=logging.DEBUG))
        stream = io.StringIO()
        logging.getLogger().addHandler(logging.StreamHandler(stream))
        s = settings()
        logging.getLogger('vgpu_nova_ext').debug('settings: %s %r', s, s)
        licensing_render.cloud_config(s, 'nvidia-18')
        licensing_render.config_drive_files(s, ['nvidia-18'], 'linux')
        for text in (logger.output, stream.getvalue()):
            self.assertNotIn(TOKEN.decode(), text)
            self.assertNotIn(base64.b64encode(TOKEN).decode(), text)
