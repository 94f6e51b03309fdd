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
"""The vendordata service end to end: HTTP on 127.0.0.1, real Placement."""

import base64
import json
import logging
import os
import threading
import urllib.error
import urllib.request
import uuid
from wsgiref import simple_server

import fixtures
import yaml

from tests.functional import base
from tests.unit import test_licensing
from vgpu_nova_ext import inventory
from vgpu_nova_ext.licensing import vendordata

HOST = base.HOST
TOKEN = test_licensing.TOKEN


class _Quiet(simple_server.WSGIRequestHandler):
    def log_message(self, *args):
        pass


class TestVendordataService(base.TestCase):

    def setUp(self):
        super().setUp()
        self.logs = self.useFixture(fixtures.FakeLogger(level=logging.DEBUG))
        root = self.compute_node()
        self.client.set_inventories(root['uuid'], root['generation'], {
            'VCPU': {'total': 16}})
        self.publisher().sync(self.assignment('m60'))
        self.vgpu = str(uuid.uuid4())
        self.plain = str(uuid.uuid4())
        gpu85 = inventory.provider_uuid('%s_pci_0000_85_00_0' % HOST)
        self.allocate(self.vgpu, {root['uuid']: {'VCPU': 2},
                                  gpu85: {'VGPU': 1}})
        self.allocate(self.plain, {root['uuid']: {'VCPU': 2}})
        self.url = self.serve(self.make_app())

    def make_app(self, **kwargs):
        kwargs.setdefault('enabled', True)
        settings = test_licensing.settings(
            type_feature_types=(('nvidia-22', '2'),), **kwargs)
        return vendordata.VendordataApp(
            settings, self.client, ['nvidia-18', 'nvidia-22'], {'VGPU'})

    def serve(self, app) -> str:
        server = simple_server.make_server('127.0.0.1', 0, app,
                                           handler_class=_Quiet)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 5)
        self.addCleanup(server.shutdown)
        self.addCleanup(server.server_close)
        return 'http://127.0.0.1:%d/' % server.server_port

    def post(self, body, url=None, raw=False, method='POST', headers=None):
        data = body if raw else json.dumps(body).encode()
        request = urllib.request.Request(
            url or self.url, data=data, method=method,
            headers=dict({'Content-Type': 'application/json'},
                         **(headers or {})))
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            text = exc.read()
            try:
                return exc.code, json.loads(text or b'null')
            except ValueError:
                return exc.code, text.decode(errors='replace')

    def nova_body(self, instance):
        return {'project-id': 'p1', 'instance-id': instance,
                'image-id': str(uuid.uuid4()), 'user-data': None,
                'hostname': 'vm1', 'metadata': {}, 'boot-roles': 'member'}

    def assertNoToken(self):
        self.assertNotIn(TOKEN.decode(), self.logs.output)

    def test_vgpu_instance_gets_the_cloud_config_as_a_bare_string(self):
        status, answer = self.post(self.nova_body(self.vgpu))
        self.assertEqual(200, status)
        self.assertIsInstance(answer, str)
        document = yaml.safe_load(answer)
        self.assertTrue(answer.startswith('#cloud-config\n'))
        paths = [f['path'] for f in document['write_files']]
        self.assertIn('/etc/nvidia/gridd.conf', paths)
        gridd = next(f for f in document['write_files']
                     if f['path'] == '/etc/nvidia/gridd.conf')
        # The instance holds nvidia-22, whose group says FeatureType 2.
        self.assertIn(b'FeatureType=2', base64.b64decode(gridd['content']))
        # As Nova files it in vendor_data2.json and cloud-init reads it.
        vendor_data2 = {'cloud-init': answer}
        self.assertIsInstance(vendor_data2['cloud-init'], str)
        self.assertNoToken()

    def test_instance_without_vgpu_gets_nothing(self):
        self.assertEqual((200, {}), self.post(self.nova_body(self.plain)))
        self.assertEqual((200, {}), self.post(self.nova_body(
            str(uuid.uuid4()))))

    def test_bad_requests(self):
        self.assertEqual(400, self.post(b'not json', raw=True)[0])
        self.assertEqual(400, self.post({'instance-id': 'i-123'})[0])
        self.assertEqual(400, self.post([1, 2])[0])
        self.assertEqual(400, self.post({})[0])
        self.assertEqual(405, self.post(None, raw=True, method='GET')[0])
        status, answer = self.post(b'x' * 300000, raw=True)
        self.assertEqual(413, status)
        for status, answer in [self.post({'instance-id': 'x'})]:
            self.assertNotIn(TOKEN.decode(), json.dumps(answer))
        self.assertNoToken()

    def test_disabled_gives_nothing(self):
        url = self.serve(self.make_app(enabled=False))
        self.assertEqual((200, {}), self.post(self.nova_body(self.vgpu),
                                              url=url))

    def test_placement_down_is_503_without_token(self):
        self.placement.server.stop()
        status, answer = self.post(self.nova_body(self.vgpu))
        self.assertEqual(503, status)
        self.assertNotIn(TOKEN.decode(), json.dumps(answer))
        self.assertNoToken()

    def test_build_from_nova_conf_and_keystone_elsewhere(self):
        tok = os.path.join(self.tmp, 'client.tok')
        with open(tok, 'wb') as f:
            f.write(TOKEN)
        conf = os.path.join(self.tmp, 'nova.conf')
        with open(conf, 'w') as f:
            f.write('[devices]\nenabled_mdev_types = nvidia-18\n'
                    '[vgpu_licensing]\nenabled = true\n'
                    'client_config_token_file = %s\n'
                    '[placement]\nauth_type = admin_token\nendpoint = %s\n'
                    'token = admin\n' % (tok, self.placement.endpoint))
        url = self.serve(vendordata.build([conf]))
        status, answer = self.post(self.nova_body(self.vgpu), url=url)
        self.assertEqual(200, status)
        self.assertIn('client_configuration_token.tok', answer)
        with open(conf, 'a') as f:
            f.write('[vgpu_vendordata]\nlisten = 0.0.0.0\n'
                    '[keystone_authtoken]\nwww_authenticate_uri = '
                    'http://127.0.0.1:9/identity\n')
        url = self.serve(vendordata.build([conf]))
        status, answer = self.post(self.nova_body(self.vgpu), url=url)
        self.assertEqual(401, status)
        self.assertNotIn(TOKEN.decode(), json.dumps(answer))

    def test_needs_auth(self):
        self.assertFalse(vendordata.needs_auth('127.0.0.1'))
        self.assertFalse(vendordata.needs_auth('::1'))
        self.assertFalse(vendordata.needs_auth('localhost'))
        self.assertTrue(vendordata.needs_auth('0.0.0.0'))
        self.assertTrue(vendordata.needs_auth('10.0.0.5'))
