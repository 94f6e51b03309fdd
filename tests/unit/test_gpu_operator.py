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
"""The GPU Operator's licensing Secret, asked for by instance metadata."""

import base64

import fixtures
import yaml

from tests import timeout
from tests.unit import test_licensing
from vgpu_nova_ext.licensing import render
from vgpu_nova_ext.vendors import nvidia_gpu_operator as gpu_operator
from vgpu_nova_ext.vendors import nvidia_licensing
from vgpu_nova_ext.vendors import types as vendor_types

KEY = gpu_operator.METADATA_KEY
TOKEN_PATH = '%s/%s' % (nvidia_licensing.TOKEN_DIR,
                        nvidia_licensing.TOKEN_NAME)


class TestRequestedNamespace(timeout.TestCase):

    def test_the_values_a_tenant_may_give(self):
        for metadata, expected in (
                ({}, None),
                (None, None),
                (['not', 'a', 'dict'], None),
                ({'other': 'true'}, None),
                ({KEY: ''}, None),
                ({KEY: 'false'}, None),
                ({KEY: 'No'}, None),
                ({KEY: 'off'}, None),
                ({KEY: '0'}, None),
                ({KEY: 'true'}, 'gpu-operator'),
                ({KEY: ' TRUE '}, 'gpu-operator'),
                ({KEY: 'yes'}, 'gpu-operator'),
                ({KEY: '1'}, 'gpu-operator'),
                ({KEY: 'on'}, 'gpu-operator'),
                ({KEY: 'nvidia-gpu-operator'}, 'nvidia-gpu-operator'),
                ({KEY: 'a'}, 'a'),
                # Blanks around it, as a form may add them, are dropped.
                ({KEY: ' ops\n'}, 'ops'),
                ({KEY: '9ns'}, '9ns'),
                ({KEY: 'x' * 63}, 'x' * 63)):
            self.assertEqual(expected,
                             gpu_operator.requested_namespace(metadata),
                             metadata)

    def test_what_kubernetes_would_refuse_is_refused(self):
        # RFC 1123 labels only: a tenant's value goes into a manifest.
        for value in ('Bad_NS', 'UPPER', 'x' * 64, '-lead', 'trail-',
                      'dot.ted', 'n\ns', 'ns: x\nkind: Pod', '../etc',
                      'a b', 'é', 7, None, ['gpu-operator'],
                      {'namespace': 'x'}):
            exc = self.assertRaises(gpu_operator.BadNamespace,
                                    gpu_operator.requested_namespace,
                                    {KEY: value})
            self.assertIn(KEY, str(exc), value)
            self.assertIn('namespace', str(exc))
            self.assertIsInstance(exc, vendor_types.GuestRequestError)


class TestSecret(timeout.TestCase):

    def found(self, **kwargs):
        return nvidia_licensing.linux(test_licensing.settings(**kwargs),
                                      'nvidia-18')

    def test_the_files_the_driver_container_mounts(self):
        found = self.found()
        manifest = yaml.safe_load(gpu_operator.manifest(found, 'ops'))
        self.assertEqual(('v1', 'Secret', 'Opaque'), (
            manifest['apiVersion'], manifest['kind'], manifest['type']))
        self.assertEqual({'name': 'licensing-config', 'namespace': 'ops',
                          'labels': {'app.kubernetes.io/managed-by':
                                     'vgpu-nova-ext'}},
                         manifest['metadata'])
        files = {f.path: f.data() for f in found.files}
        self.assertEqual(
            {'gridd.conf': files[nvidia_licensing.GRIDD_CONF],
             'client_configuration_token.tok': test_licensing.TOKEN},
            {k: base64.b64decode(v) for k, v in manifest['data'].items()})
        self.assertEqual({'driver': {'licensingConfig': {
            'secretName': 'licensing-config', 'nlsEnabled': True}}},
            gpu_operator.helm_values(found))

    def test_legacy_license_server_has_no_token(self):
        found = self.found(token=None, server_address='lic.example.org')
        manifest = yaml.safe_load(gpu_operator.manifest(found, 'ops'))
        self.assertEqual(['gridd.conf'], list(manifest['data']))
        self.assertIn(b'ServerAddress=lic.example.org',
                      base64.b64decode(manifest['data']['gridd.conf']))
        self.assertFalse(gpu_operator.helm_values(found)['driver'][
            'licensingConfig']['nlsEnabled'])

    def test_shown_without_the_token(self):
        guest_file = gpu_operator.guest_file(self.found(), 'ops')
        self.assertEqual((gpu_operator.MANIFEST_PATH, 0o600),
                         (guest_file.path, guest_file.mode))
        self.assertIsInstance(guest_file.content, vendor_types.Secret)
        encoded = base64.b64encode(test_licensing.TOKEN).decode()
        self.assertIn(encoded, guest_file.data().decode())
        for shown in (guest_file.content.shown, repr(guest_file),
                      str(guest_file.content)):
            self.assertNotIn(encoded, shown)
            self.assertNotIn(test_licensing.TOKEN.decode(), shown)
        self.assertIn(vendor_types.Secret(test_licensing.TOKEN).fingerprint,
                      guest_file.content.shown)


class TestThroughRender(timeout.TestCase):

    def setUp(self):
        super().setUp()
        self.log = self.useFixture(fixtures.FakeLogger(
            name='vgpu_nova_ext.licensing.render'))

    def test_cloud_config_writes_the_manifest(self):
        document = yaml.safe_load(render.cloud_config(
            test_licensing.settings(), 'nvidia-18',
            metadata={KEY: 'true'}, instance='i-1'))
        written = {f['path']: f for f in document['write_files']}
        manifest = written[gpu_operator.MANIFEST_PATH]
        self.assertEqual('0600', manifest['permissions'])
        secret = yaml.safe_load(base64.b64decode(manifest['content']))
        self.assertEqual('gpu-operator', secret['metadata']['namespace'])
        # The guest's own files are still there.
        self.assertIn(TOKEN_PATH, written)

    def test_a_bad_request_is_logged_and_the_rest_given(self):
        document = yaml.safe_load(render.cloud_config(
            test_licensing.settings(), 'nvidia-18',
            metadata={KEY: 'Not A Namespace'}, instance='i-2'))
        paths = [f['path'] for f in document['write_files']]
        self.assertNotIn(gpu_operator.MANIFEST_PATH, paths)
        self.assertIn(TOKEN_PATH, paths)
        self.assertIn('instance i-2', self.log.output)
        self.assertIn(KEY, self.log.output)
        self.assertNotIn(test_licensing.TOKEN.decode(), self.log.output)

    def test_windows_and_unasked_guests_get_none(self):
        for os_type, metadata in (('windows', {KEY: 'true'}),
                                  ('linux', {}), ('linux', None)):
            found = render.guest_licensing(test_licensing.settings(),
                                           'nvidia-18', os_type,
                                           metadata=metadata)
            self.assertNotIn(gpu_operator.MANIFEST_PATH,
                             [f.path for f in found.files], os_type)

    def test_config_drive_files_carry_it_too(self):
        files = dict(render.config_drive_files(
            test_licensing.settings(), ['nvidia-18'], 'linux',
            metadata={KEY: 'ops'}))
        secret = yaml.safe_load(files[gpu_operator.MANIFEST_PATH])
        self.assertEqual('ops', secret['metadata']['namespace'])
