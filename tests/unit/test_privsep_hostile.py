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
"""The privileged daemon against a hostile caller.

The daemon is started as a deployment starts it: ``privsep-helper
--config-file <nova.conf>`` run as root, its configuration naming the
host it writes (``[vgpu_nova_ext] sysfs_root``, ``mdevctl_path``). The
caller is a compromised nova-compute: a forked child of the test that
drops to an unprivileged account and then tries what such a process
could: name a root or an mdevctl directory of its own, change its own
configuration, and swap a directory it owns inside the host's tree for
links to places outside it (or to the GPU's own ``remove``) while asking
for writes. Nothing outside the configured roots may change, nor any file
of the host that the write was not for.
"""

import os
import shutil
import sys
import threading
import time
import uuid

from oslo_config import cfg
from oslo_privsep import priv_context

from tests import timeout
from tests.unit import base
from tests.unit import unprivileged
from vgpu_nova_ext.host import privsep

GPU = '0000:84:00.0'
TYPE = 'nvidia-18'
GPU_DIR = ('sys', 'devices', 'pci0000:80', '0000:80:03.0', GPU)
#: How long the swapping caller races the daemon.
RACE_SECONDS = 3.0


def _call(func, *args) -> str:
    try:
        func(*args)
        return 'written'
    except Exception as exc:
        return '%s: %s' % (type(exc).__name__, exc)


def _attacks(paths: dict) -> dict:
    """Runs as the unprivileged caller; returns what each attempt got."""
    out = {}
    device = str(uuid.uuid4())
    # 1. Roots of the caller's choosing, as the entry points once took.
    out['named_root'] = _call(privsep.create_mdev, paths['caller_root'],
                              GPU, TYPE, device)
    out['named_root_remove'] = _call(privsep.remove_mdev,
                                     paths['caller_root'], device)
    out['named_mdevctl'] = _call(privsep.write_mdevctl, paths['caller_dir'],
                                 GPU, device, TYPE)
    out['named_mdevctl_remove'] = _call(
        privsep.remove_mdevctl, paths['caller_dir'], GPU,
        paths['caller_file'])
    # ... or squeezed into the arguments that remain.
    out['path_as_parent'] = _call(privsep.write_mdevctl,
                                  paths['caller_dir'], device, TYPE)
    # 2. Its own configuration changed: the daemon keeps its own.
    cfg.CONF.set_override('sysfs_root', paths['caller_root'],
                          group='vgpu_nova_ext')
    cfg.CONF.set_override('mdevctl_path', paths['caller_dir'],
                          group='vgpu_nova_ext')
    out['create'] = _call(privsep.create_mdev, GPU, TYPE, device)
    out['mdevctl'] = _call(privsep.write_mdevctl, GPU, device, TYPE)
    # 3. A directory the caller owns in the host's tree, as each thing it
    # can make in turn; then swapped among them while the daemon writes.
    victim = str(uuid.uuid4())
    entry = os.path.join(paths['mdev_devices'], victim)
    states = {
        'own_directory': None,
        'climbing_link': os.path.join(
            '..', '..', '..', '..', 'outside', 'victim'),
        'absolute_link': paths['outside_victim'],
        'gpu_link': os.path.join('..', '..', '..', *GPU_DIR[1:]),
    }

    def become(state):
        if os.path.islink(entry) or os.path.isfile(entry):
            os.unlink(entry)
        elif os.path.isdir(entry):
            shutil.rmtree(entry)
        target = states[state]
        if target is None:
            os.mkdir(entry)
            open(os.path.join(entry, 'remove'), 'w').close()
        else:
            os.symlink(target, entry)

    for state in states:
        become(state)
        out['static_' + state] = _call(privsep.remove_mdev, victim)
    # The entry is a link to the GPU's directory now: the vGPU parameters
    # written through it would land in the GPU's.
    out['params_gpu_link'] = _call(privsep.set_vgpu_params, 'mdev', victim,
                                   'enable_uvm=1')
    # 4. The vGPU parameters' other arguments.
    out['params_root'] = _call(privsep.set_vgpu_params, paths['caller_root'],
                               'mdev', victim, 'enable_uvm=1')
    out['params_path'] = _call(privsep.set_vgpu_params, 'mdev',
                               '../../../outside/victim', 'enable_uvm=1')
    out['params_content'] = _call(privsep.set_vgpu_params, 'vf', GPU,
                                  'enable_uvm=1\nremove=1')
    stop = threading.Event()
    errors = []

    def swap():
        try:
            while not stop.is_set():
                for state in states:
                    become(state)
        except OSError as exc:
            errors.append(repr(exc))
    swapper = threading.Thread(target=swap)
    swapper.start()
    outcomes = {}
    deadline = time.monotonic() + RACE_SECONDS
    try:
        while time.monotonic() < deadline:
            got = _call(privsep.remove_mdev, victim).split(':')[0]
            outcomes[got] = outcomes.get(got, 0) + 1
    finally:
        stop.set()
        swapper.join()
    out['race'] = outcomes
    out['swap_errors'] = errors
    return out


class TestHostileCaller(timeout.TestCase):

    def setUp(self):
        super().setUp()
        self.account = unprivileged.account(self)
        self.top = self.useFixture(base.fixtures.TempDir()).path
        os.chmod(self.top, 0o755)
        uid = self.account.pw_uid
        self.host = os.path.join(self.top, 'host')
        gpu = os.path.join(self.host, *GPU_DIR)
        self.attributes = {
            'gpu_remove': os.path.join(gpu, 'remove'),
            'create': os.path.join(gpu, 'mdev_supported_types', TYPE,
                                   'create'),
            # As an mdev's (a GPU has none): what a link to it would reach.
            'gpu_params': os.path.join(gpu, 'nvidia', 'vgpu_params')}
        # The host's tree, as the kernel lays it out, root's.
        os.makedirs(os.path.dirname(self.attributes['create']))
        os.makedirs(os.path.dirname(self.attributes['gpu_params']))
        for path in self.attributes.values():
            self._file(path, 0o200)
        for link, climb in (('class/mdev_bus', 2), ('bus/pci/devices', 3)):
            directory = os.path.join(self.host, 'sys', *link.split('/'))
            os.makedirs(directory)
            os.symlink(os.path.join(*['..'] * climb, *GPU_DIR[1:]),
                       os.path.join(directory, GPU))
        # The worst case: the caller owns a directory inside the tree.
        mdev_devices = os.path.join(self.host, 'sys', 'bus', 'mdev',
                                    'devices')
        os.makedirs(mdev_devices)
        os.chown(mdev_devices, uid, -1)
        self.mdevctl = os.path.join(self.top, 'mdevctl.d')
        os.mkdir(self.mdevctl, 0o755)
        # What lies outside: a stand-in of another device, root's; a tree
        # and a directory of the caller's.
        outside = os.path.join(self.top, 'outside', 'victim')
        os.makedirs(os.path.join(outside, 'mdev_supported_types', TYPE))
        self._file(os.path.join(outside, 'remove'), 0o200)
        self._file(os.path.join(outside, 'mdev_supported_types', TYPE,
                                'create'), 0o200)
        caller_root = os.path.join(self.top, 'caller')
        shutil.copytree(os.path.join(self.host, 'sys'),
                        os.path.join(caller_root, 'sys'), symlinks=True)
        caller_dir = os.path.join(self.top, 'caller-mdevctl')
        self.caller_file = str(uuid.uuid4())
        os.makedirs(os.path.join(caller_dir, GPU))
        self._file(os.path.join(caller_dir, GPU, self.caller_file), 0o644)
        for directory in (caller_root, caller_dir):
            for dirpath, dirnames, filenames in os.walk(directory):
                for name in [dirpath] + [os.path.join(dirpath, n)
                                         for n in dirnames + filenames]:
                    os.lchown(name, uid, -1)
        self.paths = {
            'caller_root': caller_root, 'caller_dir': caller_dir,
            'caller_file': self.caller_file, 'mdev_devices': mdev_devices,
            'outside_victim': outside}
        self.conf_file = os.path.join(self.top, 'nova.conf')
        with open(self.conf_file, 'w') as f:
            f.write('[vgpu_nova_ext]\nsysfs_root = %s\nmdevctl_path = %s\n'
                    % (self.host, self.mdevctl))

    @staticmethod
    def _file(path: str, mode: int) -> None:
        open(path, 'w').close()
        os.chmod(path, mode)

    def _start_daemon(self) -> None:
        # As a deployment starts it (sudo or rootwrap run it as root): the
        # helper reads the configuration file; the caller passes nothing.
        helper = os.path.join(os.path.dirname(sys.executable),
                              'privsep-helper')
        cfg.CONF.set_override(
            'helper_command', '%s --config-file %s' % (helper, self.conf_file),
            group=privsep.CFG_SECTION)
        privsep.vgpu_pctxt.set_client_mode(True)
        privsep.vgpu_pctxt.start(method=priv_context.Method.ROOTWRAP)

    def test_writes_nothing_outside_the_configured_roots(self):
        outside_before = {
            path: found for path, found in base.tree_state(self.top).items()
            if not path.startswith(('host', 'mdevctl.d'))}
        gpu_remove = os.stat(self.attributes['gpu_remove'])
        result = unprivileged.run_as(self, self.account, _attacks,
                                     self.paths,
                                     before_drop=self._start_daemon)
        # 1. No root or directory of the caller's: the call is refused.
        for attempt in ('named_root', 'named_root_remove', 'named_mdevctl',
                        'named_mdevctl_remove'):
            self.assertTrue(result[attempt].startswith('TypeError'),
                            (attempt, result[attempt]))
        self.assertIn('is not a kernel device or type name',
                      result['path_as_parent'])
        # 2. The daemon wrote where its configuration says.
        self.assertEqual('written', result['create'])
        self.assertEqual('written', result['mdevctl'])
        with open(self.attributes['create']) as f:
            self.assertTrue(uuid.UUID(f.read()))
        [name] = os.listdir(os.path.join(self.mdevctl, GPU))
        info = os.stat(os.path.join(self.mdevctl, GPU, name))
        self.assertEqual((0, 0o644), (info.st_uid, info.st_mode & 0o777))
        # 3. Each thing the caller can put in place, and the race.
        self.assertEqual('written', result['static_own_directory'])
        self.assertIn('climbs above %s' % os.path.join(self.host, 'sys'),
                      result['static_climbing_link'])
        self.assertIn('is a link to the absolute path',
                      result['static_absolute_link'])
        self.assertIn('leads to %s' % os.path.join(
            self.host, *GPU_DIR, 'remove'), result['static_gpu_link'])
        self.assertIn('leads to %s' % os.path.join(
            self.host, *GPU_DIR, 'nvidia', 'vgpu_params'),
            result['params_gpu_link'])
        self.assertTrue(result['params_root'].startswith('TypeError'),
                        result['params_root'])
        self.assertIn('is not a UUID', result['params_path'])
        self.assertIn('are not name=value pairs', result['params_content'])
        self.assertEqual([], result['swap_errors'])
        self.assertGreater(sum(result['race'].values()), 10, result['race'])
        # Nothing outside the host's tree and mdevctl.d changed, and the
        # GPU's own remove was never written.
        self.assertEqual(outside_before, {
            path: found for path, found in base.tree_state(self.top).items()
            if not path.startswith(('host', 'mdevctl.d'))})
        self.assertEqual(0, os.stat(self.attributes['gpu_remove']).st_size)
        self.assertEqual(0, os.stat(self.attributes['gpu_params']).st_size)
        self.assertEqual(gpu_remove.st_mtime_ns,
                         os.stat(self.attributes['gpu_remove']).st_mtime_ns)
