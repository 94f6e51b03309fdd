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
"""The devstack plugin, phase by phase, with devstack's helpers stubbed."""

import configparser
import os
import shutil
import stat
import subprocess

import fixtures
import yaml

from tests import timeout
from vgpu_nova_ext.host import privsep

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
HARNESS = os.path.join(HERE, 'harness.sh')
REAL_DEVSTACK = os.path.join(HERE, 'real_devstack.sh')
SCRIPTS = ['devstack/plugin.sh', 'devstack/settings',
           'devstack/lib/vgpu-nova-ext', 'devstack/gate/verify.sh',
           'tests/devstack/harness.sh', 'tests/devstack/outside.sh',
           'tests/devstack/real_devstack.sh']


class TestPlugin(timeout.TestCase):
    """The phases with devstack's helpers stubbed (harness.sh).

    As CI runs them; TestPluginOnDevstack runs the same on a checkout.
    """

    def setUp(self):
        super().setUp()
        self.work = self.useFixture(fixtures.TempDir()).path
        self.checkout = TOP

    def command(self):
        return ['bash', HARNESS, self.work]

    def run_phases(self, *phases, env=None, ok=True):
        proc = subprocess.run(
            self.command() + list(phases), capture_output=True,
            text=True, timeout=120, env=dict(os.environ, **(env or {})))
        if ok:
            self.assertEqual(0, proc.returncode, proc.stderr)
        return proc

    def conf(self, name='nova-cpu.conf'):
        parser = configparser.ConfigParser(interpolation=None)
        parser.optionxform = str
        parser.read(os.path.join(self.work, 'etc', 'nova', name))
        return parser

    def actions(self):
        with open(os.path.join(self.work, 'actions.log')) as f:
            return f.read().splitlines()

    def test_mtty_mode_configures_what_nova_compute_reads(self):
        self.run_phases('install', 'post-config', 'start-compute', 'extra')
        conf = self.conf()
        self.assertEqual('vgpu_nova_ext_driver.LibvirtVGPUDriver',
                         conf['DEFAULT']['compute_driver'])
        self.assertEqual('True', conf['DEFAULT']['force_config_drive'])
        self.assertEqual('mtty-1', conf['devices']['enabled_mdev_types'])
        self.assertEqual('mtty_mtty',
                         conf['mdev_mtty-1']['device_addresses'])
        self.assertEqual('libvirt', conf['vgpu_nova_ext']['host_backend'])
        self.assertEqual('True', conf['vgpu_licensing']['enabled'])
        token = conf['vgpu_licensing']['client_config_token_file']
        self.assertTrue(os.path.exists(token))
        self.assertEqual(0, stat.S_IMODE(os.stat(token).st_mode) & 0o077)
        self.assertEqual('cloud-init@http://127.0.0.1:9876/',
                         conf['api']['vendordata_dynamic_targets'])
        # Nova calls the vendordata service with this user's token, which
        # the service's keystonemiddleware and policy ask for.
        auth = conf['vendordata_dynamic_auth']
        self.assertEqual(('password', 'http://127.0.0.1/identity', 'nova',
                          'service'), (auth['auth_type'], auth['auth_url'],
                                       auth['username'],
                                       auth['project_name']))
        actions = self.actions()
        self.assertIn('setup_develop %s' % self.checkout, actions)
        self.assertIn('pip_install_gr osc-placement', actions)
        self.assertIn('plugin_requires vgpu-nova-ext nova', actions)
        # devstack's run_process starts only an enabled service: the
        # plugin enables it beside the metadata API.
        self.assertIn('enable_service vgpu-nova-ext-vendordata', actions)
        self.assertTrue(any(a.startswith('run_process vgpu-nova-ext-'
                                         'vendordata') for a in actions))
        # The first boot finds a GPU provider: the extra phase waited.
        self.assertTrue(any('resource provider list --resource VGPU=1' in a
                            for a in actions))
        flavors = [a for a in actions
                   if a.startswith('openstack flavor create')]
        self.assertEqual(2, len(flavors))
        self.assertIn('resources:VGPU=1', flavors[0])
        self.assertIn('trait:CUSTOM_VGPU_MTTY_1=required', flavors[1])
        state = conf['vgpu_nova_ext']['state_path']
        self.assertEqual(0o700, stat.S_IMODE(os.stat(state).st_mode))

    def test_privsep_daemons_start_as_nova_computes_own(self):
        """No helper_command: Nova's root helper starts them.

        nova-compute initialises oslo.privsep with ``sudo nova-rootwrap
        <rootwrap_config>``, which devstack's sudoers allows and which
        admits privsep-helper; a helper_command of our own (and a rootwrap
        filter) would add nothing.
        """
        self.run_phases('install', 'post-config', 'start-compute')
        conf = self.conf()
        for section in (privsep.CFG_SECTION, privsep.MIG_CFG_SECTION):
            self.assertFalse(conf.has_option(section, 'helper_command'),
                             section)
        self.assertFalse(os.path.exists(os.path.join(
            self.work, 'etc', 'nova', 'rootwrap.d')))

    def test_unstack_and_clean_undo_it(self):
        self.run_phases('install', 'post-config', 'start-compute', 'extra')
        token = self.conf()['vgpu_licensing']['client_config_token_file']
        self.run_phases('unstack', 'clean')
        conf = self.conf('nova.conf')
        for section, option in (('DEFAULT', 'compute_driver'),
                                ('DEFAULT', 'force_config_drive'),
                                ('devices', 'enabled_mdev_types'),
                                ('mdev_mtty-1', 'device_addresses'),
                                ('vgpu_licensing', 'enabled'),
                                ('api', 'vendordata_dynamic_targets'),
                                ('vendordata_dynamic_auth', 'password')):
            self.assertFalse(conf.has_option(section, option),
                             '%s %s' % (section, option))
        self.assertFalse(os.path.exists(token))
        actions = self.actions()
        self.assertIn('stop_process vgpu-nova-ext-vendordata', actions)
        self.assertEqual(2, len([a for a in actions if a.startswith(
            'openstack flavor delete')]))

    def test_mtty_not_loaded_stops_with_a_clear_message(self):
        # Not at post-config: on stable branches Nova's plugin builds the
        # module in its extra phase, after ours.
        env = {'HARNESS_MTTY_LOADED': '0'}
        self.run_phases('install', 'post-config', 'start-compute', env=env)
        proc = self.run_phases('extra', ok=False, env=env)
        self.assertNotEqual(0, proc.returncode)
        self.assertIn('NOVA_COMPILE_MDEV_SAMPLES=True', proc.stderr)

    def test_no_vgpu_provider_stops_with_a_clear_message(self):
        proc = self.run_phases(
            'install', 'post-config', 'start-compute', 'extra', ok=False,
            env={'HARNESS_NO_VGPU': '1',
                 'VGPU_NOVA_EXT_INVENTORY_TIMEOUT': '0'})
        self.assertNotEqual(0, proc.returncode)
        self.assertIn('no resource provider with VGPU', proc.stderr)
        self.assertIn('vgpu-nova-ext check', proc.stderr)

    def test_compute_only_node(self):
        """A subnode: the driver and licensing, no vendordata, no flavors."""
        self.run_phases('install', 'post-config', 'start-compute', 'extra',
                        env={'HARNESS_ENABLED_SERVICES': 'n-cpu'})
        conf = self.conf()
        self.assertEqual('vgpu_nova_ext_driver.LibvirtVGPUDriver',
                         conf['DEFAULT']['compute_driver'])
        self.assertEqual('True', conf['vgpu_licensing']['enabled'])
        self.assertFalse(conf.has_section('vendordata_dynamic_auth'))
        self.assertFalse(conf.has_option('api', 'vendordata_providers'))
        actions = self.actions()
        for verb in ('enable_service', 'run_process', 'openstack flavor'):
            self.assertFalse([a for a in actions if a.startswith(verb)],
                             verb)

    def test_controller_without_compute(self):
        """No nova-compute here: Nova's driver is left alone."""
        self.run_phases('install', 'post-config', 'extra', env={
            'HARNESS_ENABLED_SERVICES':
                'key,placement-api,n-api,n-api-meta,n-cond,n-sch'})
        conf = self.conf('nova.conf')
        self.assertFalse(conf.has_option('DEFAULT', 'compute_driver'))
        self.assertFalse(conf.has_section('vgpu_nova_ext_privileged'))
        self.assertEqual('cloud-init@http://127.0.0.1:9876/',
                         conf['api']['vendordata_dynamic_targets'])
        actions = self.actions()
        self.assertTrue(any(a.startswith('run_process vgpu-nova-ext-'
                                         'vendordata') for a in actions))
        self.assertEqual(2, len([a for a in actions if a.startswith(
            'openstack flavor create')]))
        self.assertFalse([a for a in actions
                          if 'resource provider list' in a])

    def test_vendordata_off(self):
        self.run_phases('install', 'post-config', 'start-compute', 'extra',
                        env={'VGPU_NOVA_EXT_VENDORDATA': 'False'})
        self.assertFalse(self.conf().has_option('api',
                                                'vendordata_providers'))
        self.assertFalse([a for a in self.actions()
                          if 'vgpu-nova-ext-vendordata' in a])

    def test_nvidia_mode(self):
        env = {'VGPU_NOVA_EXT_MODE': 'nvidia',
               'VGPU_NOVA_EXT_MDEV_TYPES': 'nvidia-18,nvidia-22',
               'VGPU_NOVA_EXT_DEVICE_ADDRESSES': '',
               'VGPU_NOVA_EXT_LICENSING': 'False'}
        self.run_phases('post-config', 'start-compute', env=env)
        conf = self.conf()
        self.assertEqual('nvidia-18,nvidia-22',
                         conf['devices']['enabled_mdev_types'])
        self.assertFalse(conf.has_section('vgpu_licensing'))
        proc = self.run_phases('post-config', ok=False, env={
            'VGPU_NOVA_EXT_MODE': 'nvidia'})
        self.assertIn('needs VGPU_NOVA_EXT_MDEV_TYPES', proc.stderr)

    def test_nvidia_mode_addresses_per_type(self):
        env = {'VGPU_NOVA_EXT_MODE': 'nvidia',
               'VGPU_NOVA_EXT_MDEV_TYPES': 'nvidia-18,nvidia-22',
               'VGPU_NOVA_EXT_DEVICE_ADDRESSES':
                   'nvidia-18=0000:84:00.0;nvidia-22=0000:85:00.0,'
                   '0000:86:00.0',
               'VGPU_NOVA_EXT_LICENSING': 'False'}
        self.run_phases('post-config', 'start-compute', env=env)
        conf = self.conf()
        self.assertEqual('0000:84:00.0',
                         conf['mdev_nvidia-18']['device_addresses'])
        self.assertEqual('0000:85:00.0,0000:86:00.0',
                         conf['mdev_nvidia-22']['device_addresses'])
        # Bare addresses with two types: which type? Refused, with the form.
        proc = self.run_phases('post-config', ok=False, env=dict(
            env, VGPU_NOVA_EXT_DEVICE_ADDRESSES='0000:84:00.0'))
        self.assertNotEqual(0, proc.returncode)
        self.assertIn('<type>=<address>', proc.stderr)
        proc = self.run_phases('post-config', ok=False, env=dict(
            env, VGPU_NOVA_EXT_DEVICE_ADDRESSES='nvidia-99=0000:84:00.0'))
        self.assertIn('names nvidia-99, which is not in', proc.stderr)


class TestPluginOnDevstack(TestPlugin):
    """Every phase test on devstack's own functions (DEVSTACK_DIR).

    DEVSTACK_DIR is a devstack checkout (master or a stable branch): its
    stackrc, functions-common, lib/keystone and lib/nova, and its own
    plugin loading run the plugin (tests/devstack/real_devstack.sh); only
    sudo, systemd, the kernel's modules, package installs and the cloud
    are stubbed. CI reaches no git host, so it skips these.
    """

    def setUp(self):
        self.devstack = os.environ.get('DEVSTACK_DIR')
        if not self.devstack:
            self.skipTest('DEVSTACK_DIR (a devstack checkout) is not set')
        if not os.path.isfile(os.path.join(self.devstack, 'functions')):
            self.fail('DEVSTACK_DIR=%s holds no devstack checkout (no '
                      'functions file)' % self.devstack)
        super().setUp()
        # devstack clones the plugin into $DEST, where the script links it.
        self.checkout = os.path.join(self.work, 'dest', 'vgpu-nova-ext')

    def command(self):
        return ['bash', REAL_DEVSTACK, self.devstack, self.work]


class TestScripts(timeout.TestCase):

    def test_shellcheck_clean(self):
        shellcheck = shutil.which('shellcheck')
        if shellcheck is None:
            message = 'shellcheck is not installed (apt-get install ' \
                'shellcheck)'
            if os.environ.get('VGPU_NOVA_EXT_REQUIRE_SCHEMAS'):
                self.fail(message)
            self.skipTest(message)
        proc = subprocess.run(
            [shellcheck, '--shell=bash', '--external-sources',
             '--source-path=SCRIPTDIR', '-e', 'SC1091,SC2034,SC2154'] +
            [os.path.join(TOP, s) for s in SCRIPTS],
            capture_output=True, text=True, cwd=TOP, timeout=120)
        self.assertEqual(0, proc.returncode, proc.stdout + proc.stderr)


class TestZuul(timeout.TestCase):

    def test_job_has_what_zuul_needs(self):
        with open(os.path.join(TOP, '.zuul.yaml')) as f:
            config = yaml.safe_load(f)
        jobs = {i['job']['name']: i['job'] for i in config if 'job' in i}
        job = jobs['vgpu-nova-ext-devstack-mtty']
        self.assertIn(job['parent'], ('devstack', 'devstack-tempest'))
        self.assertTrue(job['description'])
        self.assertIn('vgpu-nova-ext', job['vars']['devstack_plugins'])
        self.assertIn('nova', job['vars']['devstack_plugins'])
        localrc = job['vars']['devstack_localrc']
        self.assertEqual('mtty', localrc['VGPU_NOVA_EXT_MODE'])
        self.assertTrue(localrc['NOVA_COMPILE_MDEV_SAMPLES'])
        post_run = job['post-run']
        self.assertTrue(os.path.exists(os.path.join(TOP, post_run)))
        (project,) = [i['project'] for i in config if 'project' in i]
        for pipeline in ('check', 'gate'):
            names = [j if isinstance(j, str) else next(iter(j))
                     for j in project[pipeline]['jobs']]
            self.assertIn('vgpu-nova-ext-devstack-mtty', names)
            self.assertIn('vgpu-nova-ext-devstack-mtty-sysfs', names)
            self.assertIn('vgpu-nova-ext-tox-release', names)
        # The release: tested in check and gate, published from a tag.
        release = jobs['vgpu-nova-ext-tox-release']
        self.assertEqual('openstack-tox', release['parent'])
        self.assertEqual('release', release['vars']['tox_envlist'])
        self.assertIn('publish-to-pypi', project['templates'])
        tox = configparser.ConfigParser(interpolation=None)
        tox.read(os.path.join(TOP, 'tox.ini'))
        self.assertIn('testenv:release', tox)
        # Zuul's tox jobs install bindep.txt's test profile: libvirt's
        # headers, which the release builds libvirt-python against.
        with open(os.path.join(TOP, 'bindep.txt')) as f:
            bindep = [line.split() for line in f
                      if line.strip() and not line.startswith('#')]
        for package in ('libvirt-dev', 'pkg-config', 'gcc'):
            (entry,) = [e for e in bindep if e[0] == package]
            self.assertIn('test', ' '.join(entry[1:]), package)
        # The variant: every device write through privsep and rootwrap.
        sysfs = jobs['vgpu-nova-ext-devstack-mtty-sysfs']
        self.assertEqual('vgpu-nova-ext-devstack-mtty', sysfs['parent'])
        self.assertEqual('sysfs', sysfs['vars']['devstack_localrc'][
            'VGPU_NOVA_EXT_HOST_BACKEND'])
