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
"""pip install, then pip uninstall, leave Nova importable and intact.

nova is no namespace package, so the driver shim is installed as a module
of Nova's own package directory; this project never ships nova/__init__.py
or nova/virt/__init__.py, and uninstalling removes the shim only.
"""

import hashlib
from importlib import metadata
import os
import subprocess
import sys
import venv

import fixtures

from tests import timeout

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
# The Nova release of this environment (one per supported release).
NOVA = 'nova==%s' % metadata.version('nova')
SAMPLES = ('vgpu-nova-ext-vendordata.ini', 'vgpu-nova-ext-vendordata.service',
           'vgpu-nova-ext-bring-up.service', 'vgpu-nova-ext-vendordata.conf')
PROBE = ('import importlib.util, nova, nova.virt; '
         'spec = importlib.util.find_spec("nova.virt.vgpu_nova_ext_driver"); '
         'print(nova.__file__); print(spec.origin if spec else None)')


def _digest(path: str) -> str:
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


class TestInstallUninstall(timeout.TestCase):

    def run_cmd(self, *argv):
        proc = subprocess.run(argv, capture_output=True, text=True,
                              timeout=600)
        self.assertEqual(0, proc.returncode, '%s\n%s\n%s' % (
            ' '.join(argv), proc.stdout[-2000:], proc.stderr[-2000:]))
        return proc.stdout

    def test_nova_intact(self):
        tmp = self.useFixture(fixtures.TempDir()).path
        wheels = os.path.join(tmp, 'wheels')
        self.run_cmd(sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
                     '-w', wheels, TOP)
        self.run_cmd(sys.executable, '-m', 'pip', 'download', '-q',
                     '--no-deps', '-d', wheels, NOVA)
        ours = [f for f in os.listdir(wheels)
                if f.startswith('vgpu_nova_ext')][0]
        nova_wheel = [f for f in os.listdir(wheels)
                      if f.startswith('nova-')][0]
        env = os.path.join(tmp, 'env')
        venv.create(env, with_pip=True)
        python = os.path.join(env, 'bin', 'python')
        pip = [python, '-m', 'pip', 'install', '-q', '--no-deps',
               '--no-index']
        # Nova alone (its dependencies are not needed to import the two
        # package directories).
        self.run_cmd(*pip, os.path.join(wheels, nova_wheel))
        site = self.run_cmd(python, '-c', 'import nova, os; print('
                            'os.path.dirname(nova.__file__))').strip()
        inits = [os.path.join(site, '__init__.py'),
                 os.path.join(site, 'virt', '__init__.py')]
        before = [_digest(p) for p in inits]

        self.run_cmd(*pip, os.path.join(wheels, ours))
        nova_file, shim = self.run_cmd(python, '-c', PROBE).split()
        self.assertEqual(inits[0], nova_file)
        self.assertEqual(os.path.join(site, 'virt',
                                      'vgpu_nova_ext_driver.py'), shim)
        self.assertEqual(before, [_digest(p) for p in inits])
        # The hosts' samples, where Nova's wheel puts its own etc/.
        samples = os.path.join(env, 'etc', 'vgpu-nova-ext')
        self.assertEqual(sorted(SAMPLES), sorted(os.listdir(samples)))
        for name in SAMPLES:
            with open(os.path.join(samples, name)) as f:
                self.assertIn('vgpu-nova-ext', f.read(), name)

        self.run_cmd(python, '-m', 'pip', 'uninstall', '-q', '-y',
                     'vgpu-nova-ext')
        self.assertFalse([n for n in SAMPLES if os.path.exists(
            os.path.join(samples, n))])
        nova_file, shim = self.run_cmd(python, '-c', PROBE).split()
        self.assertEqual(inits[0], nova_file)
        self.assertEqual('None', shim)
        self.assertEqual(before, [_digest(p) for p in inits])
        self.assertTrue(os.path.isdir(os.path.join(site, 'virt', 'libvirt')))
