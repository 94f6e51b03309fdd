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
"""What a Linux guest ends with, by cloud-init's own code.

The config drive is laid out as Nova's ConfigDriveBuilder lays it out (the
injected files under ``openstack/content``, listed in ``meta_data.json``;
the DynamicJSON answer in ``vendor_data2.json`` under its target name), and
Debian's cloud-init package reads and applies it on a scratch root
(tests/guest/cloudinit_guest.py, run by the system's python3).
"""

import base64
import json
import os
import subprocess
import uuid

import fixtures
import yaml

from tests import timeout
from tests.unit import test_licensing
from vgpu_nova_ext.licensing import render
from vgpu_nova_ext.vendors import nvidia_gpu_operator as gpu_operator
from vgpu_nova_ext.vendors import nvidia_licensing

SYSTEM_PYTHON = '/usr/bin/python3'
HELPER = os.path.join(os.path.dirname(__file__), 'cloudinit_guest.py')
TOKEN_PATH = os.path.join(nvidia_licensing.TOKEN_DIR,
                          nvidia_licensing.TOKEN_NAME)
GRIDD = '/etc/nvidia/gridd.conf'


class TestFirstBoot(timeout.TestCase):

    def setUp(self):
        super().setUp()
        found = subprocess.run(
            [SYSTEM_PYTHON, '-c', 'import cloudinit'], capture_output=True
        ).returncode == 0 if os.path.exists(SYSTEM_PYTHON) else False
        if not found:
            message = ('cloud-init is not installed for %s (apt-get install '
                       'cloud-init)' % SYSTEM_PYTHON)
            if os.environ.get('VGPU_NOVA_EXT_REQUIRE_SCHEMAS'):
                self.fail(message)
            self.skipTest(message)
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.settings = test_licensing.settings()

    def drive(self, files=(), vendordata=None) -> str:
        """A config drive directory as Nova builds it."""
        drive = os.path.join(self.tmp, 'drive')
        latest = os.path.join(drive, 'openstack', 'latest')
        os.makedirs(latest)
        os.makedirs(os.path.join(drive, 'openstack', 'content'))
        listed = []
        for index, (path, data) in enumerate(files):
            content_path = '/content/%04d' % index
            with open(os.path.join(drive, 'openstack',
                                   content_path.lstrip('/')), 'wb') as f:
                f.write(data)
            listed.append({'path': path, 'content_path': content_path})
        meta = {'uuid': str(uuid.uuid4()), 'name': 'vm1',
                'hostname': 'vm1', 'launch_index': 0,
                'availability_zone': 'nova', 'files': listed}
        with open(os.path.join(latest, 'meta_data.json'), 'w') as f:
            json.dump(meta, f)
        if vendordata is not None:
            with open(os.path.join(latest, 'vendor_data2.json'), 'w') as f:
                json.dump(vendordata, f)
        return drive

    def boot(self, drive: str) -> dict:
        root = os.path.join(self.tmp, 'root')
        os.mkdir(root)
        proc = subprocess.run([SYSTEM_PYTHON, HELPER, drive, root],
                              capture_output=True, text=True, timeout=120)
        self.assertEqual(0, proc.returncode, proc.stderr)
        result = json.loads(proc.stdout)
        with open(os.path.join(root, TOKEN_PATH.lstrip('/')), 'rb') as f:
            result['token'] = f.read()
        return result

    def test_config_drive_files_alone(self):
        # What the driver adds to the config drive (no vendor data).
        files = render.config_drive_files(self.settings, ['nvidia-18'],
                                          'linux')
        guest = self.boot(self.drive(files=files))
        self.assertEqual(test_licensing.TOKEN, guest['token'])
        # cloud-init writes injected files with mode 0660, whatever NVIDIA
        # documents, and runs nothing: nvidia-gridd reads them when it
        # (next) starts.
        self.assertEqual({TOKEN_PATH: 0o660, GRIDD: 0o660},
                         {p: f['mode'] for p, f in guest['files'].items()})
        self.assertIsNone(guest['runcmd'])

    def test_vendor_data_cloud_config(self):
        # What Nova files in vendor_data2.json from the vendordata service.
        answer = render.cloud_config(self.settings, 'nvidia-18')
        guest = self.boot(self.drive(vendordata={'cloud-init': answer}))
        self.assertEqual(test_licensing.TOKEN, guest['token'])
        self.assertEqual(
            {TOKEN_PATH: nvidia_licensing.TOKEN_MODE, GRIDD: 0o644},
            {p: f['mode'] for p, f in guest['files'].items()})
        self.assertIn('systemctl try-restart nvidia-gridd.service',
                      guest['runcmd'])

    def test_both_channels(self):
        # force_config_drive and vendor data together: the write_files
        # module runs after the datasource, so NVIDIA's modes win.
        files = render.config_drive_files(self.settings, ['nvidia-18'],
                                          'linux')
        answer = render.cloud_config(self.settings, 'nvidia-18')
        guest = self.boot(self.drive(files=files,
                                     vendordata={'cloud-init': answer}))
        self.assertEqual(nvidia_licensing.TOKEN_MODE,
                         guest['files'][TOKEN_PATH]['mode'])
        self.assertIn('nvidia-gridd', guest['runcmd'])

    def test_gpu_operator_manifest(self):
        # A Kubernetes worker VM asking for the GPU Operator's Secret: the
        # manifest root's only, its data the guest's own two files.
        answer = render.cloud_config(
            self.settings, 'nvidia-18',
            metadata={gpu_operator.METADATA_KEY: 'true'})
        drive = self.drive(vendordata={'cloud-init': answer})
        guest = self.boot(drive)
        self.assertEqual(0o600, guest['files'][
            gpu_operator.MANIFEST_PATH]['mode'])
        root = os.path.join(self.tmp, 'root')
        with open(os.path.join(root, gpu_operator.MANIFEST_PATH.lstrip(
                '/')), 'rb') as f:
            secret = yaml.safe_load(f)
        with open(os.path.join(root, GRIDD.lstrip('/')), 'rb') as f:
            gridd = f.read()
        self.assertEqual(
            {'gridd.conf': gridd,
             'client_configuration_token.tok': test_licensing.TOKEN},
            {k: base64.b64decode(v) for k, v in secret['data'].items()})
