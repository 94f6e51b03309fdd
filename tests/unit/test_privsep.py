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
"""Host writes as nova-compute makes them: an unprivileged user.

A simulated host owned by root, with the kernel's modes (``create`` and
``remove`` 0200, attributes 0444 and 0644), written by a process running
as an unprivileged account: in place the writes fail with EACCES; through
this project's privsep daemon (started by the test process while it is
still root, oslo.privsep's fork method, before it drops to that account)
they succeed. The process is a fork of the test, so nothing else of the
test runner changes user.
"""

import os
import subprocess
import sys
import uuid

from oslo_config import cfg
from oslo_privsep import priv_context

from tests import timeout
from tests.unit import base
from tests.unit import unprivileged
from vgpu_nova_ext import exception
from vgpu_nova_ext.host import privsep
from vgpu_nova_ext.host import simulated
from vgpu_nova_ext.host.simulated import kernel_writes
from vgpu_nova_ext.host import writes


CASES = {'m60': ('pci_0000_84_00_0', 'nvidia-18'),
         'a40-vfio': ('pci_0000_3d_00_5', 'nvidia-558')}


def _writes(profile, root, use_daemon):
    """Runs in the unprivileged child; returns what happened, as data."""
    parent, type_id = CASES[profile]
    backend = simulated.SimulatedBackend(simulated.load_profile(profile),
                                         root=root)
    if not use_daemon:
        backend.writer = writes
    device_id = backend.new_device_id(parent, type_id)
    try:
        backend.create_device(parent, type_id, device_id)
        created = backend.device_exists(device_id)
        backend.remove_device(device_id)
        return {'created': created,
                'removed': not backend.device_exists(device_id)}
    except exception.DeviceError as exc:
        return {'error': str(exc)}


class TestUnprivileged(timeout.TestCase):

    def setUp(self):
        super().setUp()
        self.account = unprivileged.account(self)
        top = self.useFixture(base.fixtures.TempDir()).path
        os.chmod(top, 0o755)
        self.roots = {}
        for profile in CASES:
            root = os.path.join(top, profile)
            simulated.SimulatedBackend(profile, root=root)
            self.roots[profile] = root
        create = os.path.join(self.roots['m60'], 'sys', 'class', 'mdev_bus',
                              '0000:84:00.0', 'mdev_supported_types',
                              'nvidia-18', 'create')
        info = os.stat(create)
        self.assertEqual((0, 0o200), (info.st_uid, info.st_mode & 0o777))

    def run_child(self, profile: str, use_daemon: bool) -> dict:
        root = self.roots[profile]
        return unprivileged.run_as(
            self, self.account, _writes, profile, root, use_daemon,
            before_drop=(lambda: self._start_on(root)) if use_daemon
            else None)

    def test_in_place_writes_are_refused(self):
        for profile in CASES:
            result = self.run_child(profile, use_daemon=False)
            self.assertIn('permission denied', result['error'])

    def test_writes_through_the_privsep_daemon(self):
        for profile in CASES:
            # The daemon writes the files; the host's owner (root, this
            # process) runs its kernel, which carries the writes out.
            with kernel_writes.watching(
                    simulated.SimulatedKernel.at(self.roots[profile])):
                result = self.run_child(profile, use_daemon=True)
            self.assertEqual({'created': True, 'removed': True}, result,
                             profile)
        # The daemon made them as the kernel would, in the root-owned tree.
        self.assertEqual([], os.listdir(os.path.join(
            self.roots['m60'], 'sys', 'bus', 'mdev', 'devices')))

    def test_the_daemon_writes_its_configured_host_only(self):
        # A backend on another tree than the daemon's is told so, instead
        # of its writes landing in the daemon's host.
        result = unprivileged.run_as(
            self, self.account, _writes, 'm60', self.roots['m60'], True,
            before_drop=lambda: self._start_on(self.roots['a40-vfio']))
        self.assertIn('writes under [vgpu_nova_ext] sysfs_root = %s only'
                      % self.roots['a40-vfio'], result['error'])

    @staticmethod
    def _start_on(root):
        # As nova-compute's would be: started while still root, with the
        # configuration naming the host it writes.
        privsep._configured()       # registers [vgpu_nova_ext]
        cfg.CONF.set_override('sysfs_root', root, group='vgpu_nova_ext')
        privsep.vgpu_pctxt.set_client_mode(True)
        privsep.vgpu_pctxt.start(method=priv_context.Method.FORK)


class TestArguments(timeout.TestCase):
    """No caller can name a path: every argument is checked."""

    def setUp(self):
        super().setUp()
        self.root = self.useFixture(base.fixtures.TempDir()).path
        self.backend = simulated.SimulatedBackend('m60', root=self.root)

    def test_device_id_cannot_climb_out(self):
        for bad in ('../../pci/devices/0000:84:00.0',
                    '../../../../etc/passwd', 'ABCDEF', '',
                    str(uuid.uuid4()).upper()):
            exc = self.assertRaises(writes.InvalidHostWrite,
                                    writes.remove_mdev, self.root, bad)
            self.assertIn('nothing was written', str(exc))

    def test_parent_and_type_are_names(self):
        good = str(uuid.uuid4())
        for parent, type_id in (('..', 'nvidia-18'),
                                ('0000:84:00.0/../..', 'nvidia-18'),
                                ('0000:84:00.0', '../../remove'),
                                ('0000:84:00.0', 'a/b')):
            self.assertRaises(writes.InvalidHostWrite, writes.create_mdev,
                              self.root, parent, type_id, good)

    def test_vf_address_and_type_number(self):
        for address, number in (('0000:3d:00.4/..', 558), ('x', 1),
                                ('0000:3d:00.4', -1), ('0000:3d:00.4', '1'),
                                ('0000:3d:00.4', True)):
            self.assertRaises(writes.InvalidHostWrite,
                              writes.set_vf_vgpu_type, self.root, address,
                              number)

    def test_gpu_instance_is_a_profile_and_a_slice(self):
        # nvidia-smi's argument vector and NVML's placement are built from
        # it: a profile name and a start slice, nothing else.
        for bad in ('1g.18gb', '1g.18gb:8', '1g.18gb:-1', '1g.18gb:1:2',
                    '../1g:1', '1g.18gb -C; reboot:1', ':1', 7, None):
            exc = self.assertRaises(
                writes.InvalidHostWrite, writes.mig_command, self.root,
                '0000:84:00.0', 'create_gpu_instance', bad)
            self.assertIn('nothing was run', str(exc))

    def test_a_link_out_of_sys_is_refused(self):
        # A parent entry on the mdev bus that points outside sys/.
        outside = self.useFixture(base.fixtures.TempDir()).path
        target = os.path.join(outside, 'mdev_supported_types', 't', 'create')
        os.makedirs(os.path.dirname(target))
        open(target, 'w').close()
        os.symlink(outside, os.path.join(self.root, 'sys', 'class',
                                         'mdev_bus', 'evil'))
        exc = self.assertRaises(writes.InvalidHostWrite, writes.create_mdev,
                                self.root, 'evil', 't', str(uuid.uuid4()))
        self.assertIn('is a link to the absolute path', str(exc))
        # The same place as a relative link that climbs out of sys/.
        os.unlink(os.path.join(self.root, 'sys', 'class', 'mdev_bus',
                               'evil'))
        os.symlink(os.path.relpath(outside, os.path.join(
            self.root, 'sys', 'class', 'mdev_bus')), os.path.join(
                self.root, 'sys', 'class', 'mdev_bus', 'evil'))
        exc = self.assertRaises(writes.InvalidHostWrite, writes.create_mdev,
                                self.root, 'evil', 't', str(uuid.uuid4()))
        self.assertIn('climbs above %s' % os.path.join(self.root, 'sys'),
                      str(exc))
        with open(target) as f:
            self.assertEqual('', f.read())

    def test_the_privileged_path_holds_nothing_of_the_simulator(self):
        # The daemon imports these (and what they import) only.
        code = ('import sys; import vgpu_nova_ext.host.privsep; '
                'print([m for m in sys.modules if "simulated" in m])')
        out = subprocess.run([sys.executable, '-c', code], check=True,
                             capture_output=True, text=True).stdout
        self.assertEqual('[]', out.strip())
