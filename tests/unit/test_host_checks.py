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
"""``check``'s host findings: the state directory and the privsep daemon."""

import os
import shutil
from unittest import mock

from oslo_config import cfg

from tests import timeout
from tests.unit import base
from tests.unit import unprivileged
from vgpu_nova_ext.cmd import host_checks
from vgpu_nova_ext.devices import ledger
from vgpu_nova_ext import exception
from vgpu_nova_ext import findings
from vgpu_nova_ext.host import privsep


class TestStateDirectory(timeout.TestCase):

    def setUp(self):
        super().setUp()
        self.top = self.useFixture(base.fixtures.TempDir()).path
        self.path = os.path.join(self.top, 'state')

    def codes(self):
        return [(p.severity, p.code)
                for p in host_checks.state_dir_findings(self.path)]

    def test_missing_says_how_to_create_it(self):
        (problem,) = host_checks.state_dir_findings(self.path)
        self.assertEqual(findings.WARNING, problem.severity)
        self.assertIn('install -d -o', problem.fix)
        self.assertIn(self.path, problem.fix)

    def test_a_file_is_no_state_directory(self):
        open(self.path, 'w').close()
        self.assertEqual([(findings.ERROR, 'state.not_dir')], self.codes())

    def test_private_directory_is_fine(self):
        os.mkdir(self.path, 0o700)
        self.assertEqual([], self.codes())

    def read_only_mount(self):
        # A read-only mount cannot be made here without privileges: the
        # file system's flags are what os.statvfs says (mocked, only them).
        real = os.statvfs

        def statvfs(path):
            found = real(path)
            return mock.Mock(f_flag=found.f_flag | os.ST_RDONLY)
        self.useFixture(base.fixtures.MonkeyPatch('os.statvfs', statvfs))

    def test_a_read_only_file_system_is_named(self):
        os.mkdir(self.path, 0o700)
        self.read_only_mount()
        (problem,) = host_checks.state_dir_findings(self.path)
        self.assertEqual((findings.ERROR, 'state.read_only'),
                         (problem.severity, problem.code))
        self.assertIn('read-only file system', problem.why)
        # The ledger names it too, not "chmod u+rwx" on a 0700 directory
        # (as root, which may write anything, access() is mocked too).
        self.useFixture(base.fixtures.MonkeyPatch(
            'os.access', lambda path, mode: False))
        exc = self.assertRaises(exception.LedgerError,
                                ledger.check_state_dir, self.path)
        self.assertIn('read-only file system', str(exc))
        self.assertNotIn('chmod', str(exc))

    def test_mode_open_to_others_is_reported(self):
        os.mkdir(self.path)
        os.chmod(self.path, 0o755)
        (problem,) = host_checks.state_dir_findings(self.path)
        self.assertEqual('state.mode', problem.code)
        self.assertIn('chmod 0700 %s' % self.path, problem.fix)

    def test_mode_writable_by_others_is_an_error(self):
        # The ledger refuses such a directory, so nova-compute would not
        # start: check says so before.
        os.mkdir(self.path)
        os.chmod(self.path, 0o777)
        self.assertEqual([(findings.ERROR, 'state.writable')], self.codes())

    def test_as_root_the_daemon_is_not_needed(self):
        if os.geteuid() != 0:
            self.skipTest('root only')
        self.assertEqual([], host_checks.privsep_findings('sysfs'))

    def test_simulated_host_needs_no_daemon(self):
        self.assertEqual([], host_checks.privsep_findings('simulated'))


def _findings(helper_command, timeout, backend='sysfs', mig=False):
    """check's privsep findings, in the unprivileged child."""
    if helper_command is not None:
        for section in (privsep.CFG_SECTION, privsep.MIG_CFG_SECTION):
            cfg.CONF.set_override('helper_command', helper_command,
                                  group=section)
    return [[p.severity, p.code, p.why] for p in
            host_checks.privsep_findings(backend, mig=mig, timeout=timeout)]


class TestPrivsepProbe(timeout.TestCase):
    """check, as an unprivileged user, of a daemon that cannot start.

    An error that says why: never a password prompt, never a hang.
    """

    def setUp(self):
        super().setUp()
        self.account = unprivileged.account(self)

    def findings(self, helper_command, timeout=30.0):
        return unprivileged.run_as(self, self.account, _findings,
                                   helper_command, timeout)

    def test_helper_that_fails_is_an_error(self):
        ((severity, code, detail),) = self.findings('false')
        self.assertEqual([findings.ERROR, 'privsep.start'], [severity, code])
        self.assertIn('exited non-zero', detail)

    def test_a_declared_mig_layout_needs_the_mig_context_too(self):
        found = unprivileged.run_as(self, self.account, _findings, 'false',
                                    30.0, 'sysfs', True)
        self.assertEqual(
            ['the privsep daemon that makes the host writes cannot start',
             'the privsep daemon that makes the MIG layout steps cannot '
             'start'], [m.split(' (')[0] for _, _, m in found])

    def test_helper_that_hangs_is_ended(self):
        # As a sudo waiting for a password would, on a terminal.
        ((severity, code, detail),) = self.findings("sh -c 'sleep 600'",
                                                    timeout=2)
        self.assertEqual([findings.ERROR, 'privsep.start'], [severity, code])
        self.assertIn('no answer within 2 s', detail)

    def test_sudo_with_no_rule_fails_without_asking(self):
        # The default helper, sudo privsep-helper: for a user sudo gives
        # nothing to, it must fail at once (no terminal to ask on).
        if shutil.which('sudo') is None:
            self.skipTest('sudo is not installed')
        ((severity, code, detail),) = self.findings(None)
        self.assertEqual([findings.ERROR, 'privsep.start'], [severity, code])
        self.assertIn('exited non-zero', detail)
