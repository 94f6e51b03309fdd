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
"""What this package takes from Nova's own options.

Where the ledgers live when [vgpu_nova_ext] state_path is unset (Nova's
[DEFAULT] state_path), and how the privsep daemons start (Nova's root
helper: [DEFAULT] rootwrap_config, [workarounds] disable_rootwrap).
Through the command line, which reads nova.conf as nova-compute does, and
through the function nova-compute's driver calls with Nova's own CONF.
The old default (/var/lib/vgpu-nova-ext) is a module constant pointed at
a temporary directory here: the machine's own /var/lib is not the test's.
"""

import json
import logging
import os

import fixtures
from oslo_config import cfg

from tests.unit import test_cli
from vgpu_nova_ext.conf import state
from vgpu_nova_ext.devices import factory
from vgpu_nova_ext.host import privsep


DEVICES = '[devices]\nenabled_mdev_types = nvidia-18\n'


class StateTestCase(test_cli.CLITestCase):

    def setUp(self):
        super().setUp()
        self.legacy = os.path.join(self.root, 'var-lib-vgpu-nova-ext')
        self.useFixture(fixtures.MonkeyPatch(
            'vgpu_nova_ext.conf.state.LEGACY', self.legacy))
        self.useFixture(fixtures.MonkeyPatch(
            'vgpu_nova_ext.conf.state._warned', set()))
        self.nova_state = os.path.join(self.root, 'var-lib-nova')
        os.mkdir(self.nova_state)
        self.log = self.useFixture(fixtures.FakeLogger(
            name='vgpu_nova_ext.conf.state', level=logging.WARNING))


class TestStateRoot(StateTestCase):

    def claim(self, conf_text):
        """Claim a vGPU with the command line; the ledger's directory."""
        conf = self.write_config(DEVICES + conf_text)
        from vgpu_nova_ext.cmd import cli
        from vgpu_nova_ext.cmd import common as cmd_common
        args = cli.build_parser().parse_args(
            ['--simulate', 'm60', '--host', 'cn1', '--config-file', conf,
             'devices'])
        plan = cmd_common.build_plan(args)
        with cmd_common.allocator(args, plan) as al:
            rp = next(iter(al.targets))
            al.claim('inst-1', {rp: {'resources': {'VGPU': 1}}})
        return plan.state_root, conf

    def test_under_novas_state_path(self):
        root, conf = self.claim('[DEFAULT]\nstate_path = %s\n'
                                % self.nova_state)
        wanted = os.path.join(self.nova_state, 'vgpu-nova-ext')
        self.assertEqual(wanted, root)
        self.assertTrue(os.path.isdir(os.path.join(wanted, 'cn1')))
        # Every command reads the same ledger there.
        code, out, err = self.run_cli('--simulate', 'm60', '--host', 'cn1',
                                      '--config-file', conf, 'devices',
                                      '--format', 'json')
        self.assertEqual(0, code, err)
        self.assertEqual(['inst-1'], [
            d['owner'] for d in json.loads(out)['devices']
            if d['owner'] not in ('free', 'foreign')])
        self.assertFalse(os.path.exists(self.legacy))
        self.assertEqual('', self.log.output)

    def test_own_option_first(self):
        own = os.path.join(self.root, 'own')
        root, _ = self.claim('[DEFAULT]\nstate_path = %s\n[vgpu_nova_ext]\n'
                             'state_path = %s\n' % (self.nova_state, own))
        self.assertEqual(own, root)
        self.assertFalse(os.path.exists(os.path.join(self.nova_state,
                                                     'vgpu-nova-ext')))

    def test_old_directory_kept_with_a_warning(self):
        os.makedirs(os.path.join(self.legacy, 'cn1'))
        root, _ = self.claim('[DEFAULT]\nstate_path = %s\n'
                             % self.nova_state)
        self.assertEqual(self.legacy, root)
        wanted = os.path.join(self.nova_state, 'vgpu-nova-ext')
        self.assertFalse(os.path.exists(wanted))
        self.assertIn('mv %s %s' % (self.legacy, wanted), self.log.output)
        self.assertIn('[vgpu_nova_ext] state_path = %s' % self.legacy,
                      self.log.output)
        # Once moved, the new place wins (the warning is not repeated).
        os.rename(self.legacy, wanted)
        os.makedirs(self.legacy)
        root, _ = self.claim('[DEFAULT]\nstate_path = %s\n'
                             % self.nova_state)
        self.assertEqual(wanted, root)
        self.assertEqual(1, self.log.output.count('mv '))

    def test_novas_state_path_unset_keeps_the_old_default(self):
        root, _ = self.claim('')
        self.assertEqual(self.legacy, root)
        self.assertEqual('', self.log.output)


class TestInsideNovaCompute(StateTestCase):
    """Nova's CONF: its state_path registered with Nova's own default."""

    def nova_conf(self, text):
        conf = cfg.ConfigOpts()
        # As nova/conf/paths.py: a default (Nova's package directory) that
        # no deployment keeps.
        conf.register_opt(cfg.StrOpt('state_path',
                                     default='/usr/lib/python3/dist-packages'))
        from vgpu_nova_ext.conf import extension
        extension.register_opts(conf)
        conf([], default_config_files=[self.write_config(text)])
        return conf

    def test_host_state_path(self):
        conf = self.nova_conf('[DEFAULT]\nstate_path = %s\n'
                              % self.nova_state)
        self.assertEqual(
            os.path.join(self.nova_state, 'vgpu-nova-ext', 'cn1'),
            factory.host_state_path(conf, 'cn1'))
        # Nova's default is not a place to keep state: the old default.
        self.assertEqual(os.path.join(self.legacy, 'cn1'),
                         factory.host_state_path(self.nova_conf(''), 'cn1'))
        self.assertEqual(state.LEGACY, self.legacy)


class TestRootHelper(test_cli.CLITestCase):
    """The commands start their privsep daemons as nova-compute does."""

    def helpers(self, conf_text):
        from vgpu_nova_ext.cmd import cli
        from vgpu_nova_ext.cmd import common as cmd_common
        conf = self.write_config(DEVICES + conf_text)
        cmd_common.build_plan(cli.build_parser().parse_args(
            ['--simulate', 'm60', '--host', 'cn1', '--state-path', self.root,
             '--config-file', conf, 'devices']))
        return [privsep.helper_command(section) for section in (
            privsep.CFG_SECTION, privsep.MIG_CFG_SECTION)]

    def test_novas_root_helper(self):
        self.assertEqual(
            ['sudo nova-rootwrap /etc/nova/rootwrap.conf privsep-helper'] * 2,
            self.helpers(''))
        self.assertEqual(
            ['sudo nova-rootwrap /srv/nova/rootwrap.conf privsep-helper'] * 2,
            self.helpers('[DEFAULT]\nrootwrap_config = '
                         '/srv/nova/rootwrap.conf\n'))
        self.assertEqual(['sudo privsep-helper'] * 2, self.helpers(
            '[workarounds]\ndisable_rootwrap = true\n'))

    def test_own_helper_command_wins(self):
        self.assertEqual(
            ['/usr/local/bin/my-helper',
             'sudo nova-rootwrap /etc/nova/rootwrap.conf privsep-helper'],
            self.helpers('[vgpu_nova_ext_privileged]\n'
                         'helper_command = /usr/local/bin/my-helper\n'))
