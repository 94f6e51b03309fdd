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
import concurrent.futures
import json
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from wsgiref import simple_server

import fixtures
from keystonemiddleware import fixture as ks_fixture
import yaml

from tests.functional import base
from tests.unit import test_licensing
from vgpu_nova_ext.cmd import vendordata as vendordata_cmd
from vgpu_nova_ext import exception
from vgpu_nova_ext import inventory
from vgpu_nova_ext.licensing import policy
from vgpu_nova_ext.licensing import vendordata
from vgpu_nova_ext import listen

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

    def test_gpu_operator_worker_gets_the_secret_manifest(self):
        # The tenant booted it with --property vgpu_nova_ext:gpu_operator=
        # <namespace>; Nova sends the instance's metadata.
        body = self.nova_body(self.vgpu)
        body['metadata'] = {'vgpu_nova_ext:gpu_operator': 'gpu-ops'}
        status, answer = self.post(body)
        self.assertEqual(200, status)
        written = {f['path']: f for f in
                   yaml.safe_load(answer)['write_files']}
        manifest = written['/etc/nvidia/gpu-operator/licensing-config.yaml']
        self.assertEqual('0600', manifest['permissions'])
        secret = yaml.safe_load(base64.b64decode(manifest['content']))
        self.assertEqual(('Secret', 'gpu-ops'), (
            secret['kind'], secret['metadata']['namespace']))
        self.assertEqual(TOKEN, base64.b64decode(
            secret['data']['client_configuration_token.tok']).rstrip())
        self.assertIn(b'FeatureType=2', base64.b64decode(
            secret['data']['gridd.conf']))
        # A value no namespace can have: the rest, and a log line.
        body['metadata'] = {'vgpu_nova_ext:gpu_operator': {'x': 'y'}}
        status, answer = self.post(body)
        self.assertEqual(200, status)
        paths = [f['path'] for f in yaml.safe_load(answer)['write_files']]
        self.assertIn('/etc/nvidia/gridd.conf', paths)
        self.assertNotIn('/etc/nvidia/gpu-operator/licensing-config.yaml',
                         paths)
        self.assertIn('vgpu_nova_ext:gpu_operator', self.logs.output)
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

    def test_nested_json_is_a_400_without_traceback(self):
        status, answer = self.post(b'[' * 100000 + b']' * 100000, raw=True)
        self.assertEqual(400, status)
        self.assertNotIn('Traceback', json.dumps(answer))

    def write_nova_conf(self, extra: str = '', placement: str | None = None
                        ) -> str:
        tok = os.path.join(self.tmp, 'client.tok')
        with open(tok, 'wb') as f:
            f.write(TOKEN)
        conf = os.path.join(self.tmp, 'nova.conf')
        with open(conf, 'w') as f:
            f.write('[devices]\nenabled_mdev_types = nvidia-18\n'
                    '[vgpu_licensing]\nenabled = true\n'
                    'client_config_token_file = %s\n'
                    '[placement]\nauth_type = admin_token\nendpoint = %s\n'
                    'token = admin\n'
                    '[keystone_authtoken]\nwww_authenticate_uri = '
                    'http://127.0.0.1:9/identity\nauth_type = password\n'
                    'auth_url = http://127.0.0.1:9/identity\n'
                    'username = vgpu\npassword = secret\n'
                    'user_domain_name = Default\nproject_name = service\n'
                    'project_domain_name = Default\n%s' % (
                        tok, placement or self.placement.endpoint, extra))
        return conf

    def keystone_tokens(self) -> tuple[str, str, str]:
        """Tokens of Nova's service user, an admin and a project member.

        keystonemiddleware's own fixture stands in for Keystone: it answers
        token validation for these.
        """
        tokens = self.useFixture(ks_fixture.AuthTokenFixture())
        users = (('nova', 'service', ['service']),
                 ('admin', 'admin', ['admin']),
                 ('tenant', 'p1', ['member', 'reader']))
        for user, project, roles in users:
            tokens.add_token_data(token_id=user + '-token', user_id=user,
                                  project_id=project, role_list=roles)
        return tuple(user + '-token' for user, _, _ in users)

    def test_wsgi_application_always_asks_keystone_and_policy(self):
        nova, admin, member = self.keystone_tokens()
        conf = self.write_nova_conf()
        self.useFixture(fixtures.EnvironmentVariable(
            'VGPU_NOVA_EXT_CONFIG_FILES', conf))
        url = self.serve(vendordata.init_application())
        body = self.nova_body(self.vgpu)
        status, answer = self.post(body, url=url)
        self.assertEqual(401, status)
        self.assertEqual(401, self.post(body, url=url, headers={
            'X-Auth-Token': 'not-a-token'})[0])
        status, answer = self.post(body, url=url,
                                   headers={'X-Auth-Token': member})
        self.assertEqual(403, status)
        self.assertIn(policy.VENDORDATA_SHOW, answer['error'])
        # Headers a client sets itself count for nothing.
        self.assertEqual(401, self.post(body, url=url, headers={
            'X-Identity-Status': 'Confirmed', 'X-Roles': 'service'})[0])
        for token in (nova, admin):
            status, answer = self.post(body, url=url,
                                       headers={'X-Auth-Token': token})
            self.assertEqual(200, status)
            self.assertIn('client_configuration_token.tok', answer)
        self.assertNoToken()

    def test_policy_file_overrides_the_default(self):
        nova, _, member = self.keystone_tokens()
        with open(os.path.join(self.tmp, 'vgpu-nova-ext-policy.yaml'),
                  'w') as f:
            f.write('"%s": "role:member"\n' % policy.VENDORDATA_SHOW)
        url = self.serve(vendordata.build([self.write_nova_conf()]))
        body = self.nova_body(self.vgpu)
        self.assertEqual(200, self.post(body, url=url, headers={
            'X-Auth-Token': member})[0])
        self.assertEqual(403, self.post(body, url=url, headers={
            'X-Auth-Token': nova})[0])

    def test_without_authentication_only_when_told(self):
        url = self.serve(vendordata.build([self.write_nova_conf()],
                                          authenticate=False))
        status, answer = self.post(self.nova_body(self.vgpu), url=url)
        self.assertEqual(200, status)
        self.assertIn('client_configuration_token.tok', answer)

    def test_without_keystone_credentials_refused_at_start(self):
        conf = self.write_nova_conf()
        with open(conf) as f:
            text = f.read()
        with open(conf, 'w') as f:
            f.write(text.replace('auth_type = password\n', ''))
        exc = self.assertRaises(exception.ConfigError, vendordata.build,
                                [conf])
        self.assertIn('[keystone_authtoken] auth_type', str(exc))
        self.assertIn('--noauth', str(exc))

    def test_is_loopback(self):
        self.assertTrue(listen.is_loopback('127.0.0.1'))
        self.assertTrue(listen.is_loopback('::1'))
        self.assertTrue(listen.is_loopback('localhost'))
        self.assertFalse(listen.is_loopback('0.0.0.0'))
        self.assertFalse(listen.is_loopback('10.0.0.5'))

    def test_placement_that_never_answers_is_a_bounded_503(self):
        # A Placement that accepts connections and never answers: the
        # kernel completes the handshake into the backlog, nobody reads.
        silent = socket.socket()
        silent.bind(('127.0.0.1', 0))
        silent.listen(64)
        self.addCleanup(silent.close)
        conf = self.write_nova_conf(
            placement='http://127.0.0.1:%d/' % silent.getsockname()[1])
        url = self.serve(vendordata.build([conf], authenticate=False))
        started = time.monotonic()
        status, answer = self.post(self.nova_body(self.vgpu), url=url)
        self.assertEqual(503, status)
        self.assertNotIn(TOKEN.decode(), json.dumps(answer))
        # Answered within Nova's own wait ([api]
        # vendordata_dynamic_read_timeout, 5 s by default): by default
        # [vgpu_vendordata] placement_timeout (4 s), one try.
        self.assertLess(time.monotonic() - started, 5)


class TestDevelopmentServer(base.TestCase):
    """The threaded development server survives idle and many clients."""

    def setUp(self):
        super().setUp()

        def app(environ, start_response):
            return vendordata.respond(start_response, '200 OK', {'ok': 1})

        self.server = vendordata_cmd.make_server('127.0.0.1', 0, app)
        thread = threading.Thread(target=self.server.serve_forever,
                                  daemon=True)
        thread.start()
        self.addCleanup(thread.join, 5)
        self.addCleanup(self.server.server_close)
        self.addCleanup(self.server.shutdown)
        self.url = 'http://127.0.0.1:%d/' % self.server.server_port

    def get(self) -> int:
        request = urllib.request.Request(self.url, data=b'{}',
                                         method='POST')
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status

    def test_idle_connection_blocks_nobody(self):
        idle = socket.create_connection(('127.0.0.1',
                                         self.server.server_port))
        self.addCleanup(idle.close)
        idle.sendall(b'POST / HTTP/1.1\r\n')  # and never the rest
        self.assertEqual(200, self.get())

    def test_many_concurrent_clients_all_answered(self):
        with concurrent.futures.ThreadPoolExecutor(40) as pool:
            statuses = list(pool.map(lambda _: self.get(), range(200)))
        self.assertEqual([200] * 200, statuses)
