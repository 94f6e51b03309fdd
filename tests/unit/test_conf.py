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
import os

from oslo_config import cfg

from tests import configs
from tests.unit import base
from tests.unit import conf_forms
from vgpu_nova_ext.conf import loader
from vgpu_nova_ext.conf import opts
from vgpu_nova_ext import exception


class TestDeviceConfig(base.TestCase):

    def test_new_names(self):
        config = self.device_config("""
            [devices]
            enabled_mdev_types = nvidia-35, nvidia-36

            [mdev_nvidia-35]
            device_addresses = 0000:84:00.0,0000:85:00.0

            [mdev_nvidia-36]
            mdev_class = CUSTOM_NVIDIA_36
            max_instances = 4
            """)
        self.assertEqual(('nvidia-35', 'nvidia-36'), config.type_ids)
        first, second = config.types
        self.assertEqual(('0000:84:00.0', '0000:85:00.0'),
                         first.device_addresses)
        self.assertEqual(('VGPU', None), (first.mdev_class,
                                          first.max_instances))
        self.assertEqual((), second.device_addresses)
        self.assertEqual(('CUSTOM_NVIDIA_36', 4),
                         (second.mdev_class, second.max_instances))
        self.assertEqual('enabled_mdev_types', config.option)

    def test_old_names_as_nova_reads_them(self):
        config = self.device_config("""
            [devices]
            enabled_vgpu_types = nvidia-35, nvidia-36

            [vgpu_nvidia-35]
            device_addresses = 0000:84:00.0

            [mdev_nvidia-36]
            device_addresses = 0000:86:00.0
            """)
        self.assertEqual('enabled_vgpu_types', config.option)
        first, second = config.types
        self.assertEqual('vgpu_nvidia-35', first.group)
        self.assertEqual(('0000:84:00.0',), first.device_addresses)
        self.assertEqual('mdev_nvidia-36', second.group)

    def test_later_files_win(self):
        one = self.write_config("""
            [devices]
            enabled_mdev_types = nvidia-35
            """)
        two = self.write_config("""
            [devices]
            enabled_mdev_types = nvidia-36
            """)
        config = configs.device_config([one, two])
        self.assertEqual(('nvidia-36',), config.type_ids)

    def test_nothing_enabled(self):
        self.assertEqual((), self.device_config('[DEFAULT]\n').types)
        self.assertEqual((), configs.device_config([]).types)

    def test_duplicates_kept_once(self):
        config = self.device_config("""
            [devices]
            enabled_mdev_types = nvidia-35, nvidia-35
            """)
        self.assertEqual(('nvidia-35',), config.type_ids)
        self.assertEqual(('nvidia-35',), config.duplicates)

    def test_bad_values_are_all_reported(self):
        exc = self.assertRaises(exception.ConfigError, self.device_config, """
            [devices]
            enabled_mdev_types = nvidia-35

            [mdev_nvidia-35]
            mdev_class = gpu
            max_instances = 0
            """)
        self.assertIn('[mdev_nvidia-35] mdev_class', str(exc))
        self.assertIn("'gpu'", str(exc))
        self.assertIn('CUSTOM_<NAME>', str(exc))
        self.assertIn('[mdev_nvidia-35] max_instances', str(exc))
        self.assertIn('at least 1', str(exc))

    def test_bad_value_in_old_group_is_named_so(self):
        exc = self.assertRaises(exception.ConfigError, self.device_config, """
            [devices]
            enabled_mdev_types = nvidia-35

            [vgpu_nvidia-35]
            max_unit = many
            """)
        self.assertIn('[vgpu_nvidia-35] max_unit', str(exc))

    def test_old_group_as_nova_reads_it(self):
        # Nova gives the old group name to device_addresses alone; this
        # project's own options are read under both names.
        config = self.device_config("""
            [devices]
            enabled_vgpu_types = nvidia-35

            [vgpu_nvidia-35]
            device_addresses = 0000:84:00.0
            max_instances = 3
            mdev_class = CUSTOM_X
            max_unit = 2
            reserved = 1
            feature_type = 4
            """)
        (tconf,) = config.types
        self.assertEqual(('0000:84:00.0',), tconf.device_addresses)
        self.assertEqual((None, 'VGPU'), (tconf.max_instances,
                                          tconf.mdev_class))
        self.assertEqual(('max_instances', 'mdev_class'),
                         tuple(sorted(tconf.ignored_old)))
        self.assertEqual((2, 1, '4'), (tconf.max_unit, tconf.reserved,
                                       tconf.feature_type))

    def test_bad_type_id(self):
        exc = self.assertRaises(exception.ConfigError, self.device_config, """
            [devices]
            enabled_mdev_types = nvidia-35, , nvidia 36
            """)
        self.assertIn('enabled_mdev_types', str(exc))

    def test_missing_file(self):
        missing = os.path.join(self.root, 'missing.conf')
        exc = self.assertRaises(exception.ConfigError,
                                configs.device_config, [missing])
        self.assertIn(missing, str(exc))
        self.assertIn('--config-file', str(exc))

    def test_unparsable_file(self):
        path = self.write_config('this is not [an ini file\n')
        exc = self.assertRaises(exception.ConfigError,
                                configs.device_config, [path])
        self.assertIn(path, str(exc))

    def test_global_conf_untouched_and_nova_can_register(self):
        # Nova registers [devices] on the global CONF with its own help
        # text; ours must never collide with it.
        global_conf = cfg.ConfigOpts()
        global_conf.register_opt(cfg.ListOpt(
            'enabled_mdev_types', default=[], help='Nova says so'),
            group='devices')
        self.device_config("""
            [devices]
            enabled_mdev_types = nvidia-35
            """)
        self.assertNotIn('devices', cfg.CONF)
        self.assertNotIn('mdev_nvidia-35', cfg.CONF)


class TestForms(base.TestCase):
    """Each form an operator writes, read as nova-compute reads it."""

    def test_forms(self):
        for name, form in conf_forms.FORMS.items():
            with self.subTest(form=name):
                root = os.path.join(self.root, name.replace(' ', '-'))
                os.mkdir(root)
                files, dirs = conf_forms.write(form, root)
                self.assertEqual(form.expected, conf_forms.summary(
                    configs.device_config(files, dirs)))

    def test_old_group_values_nova_ignores_are_named(self):
        files, dirs = conf_forms.write(conf_forms.FORMS['old names'],
                                       self.root)
        config = configs.device_config(files, dirs)
        self.assertEqual({'nvidia-35': ('max_instances',),
                          'nvidia-36': ('mdev_class',)},
                         {t.type_id: t.ignored_old for t in config.types})
        self.assertEqual('enabled_vgpu_types', config.option)


class TestSampleOptions(base.TestCase):

    def test_every_option_has_real_help(self):
        seen = []
        for group, options in opts.list_opts():
            self.assertTrue(getattr(group, 'help', None), group)
            for opt in options:
                seen.append(opt.name)
                # [placement] is keystoneauth's, with its own (terse) help.
                minimum = 0 if group.name == 'placement' else 40
                self.assertGreater(len(opt.help or ''), minimum, opt.name)
        for name in ('enabled_mdev_types', 'device_addresses', 'mdev_class',
                     'max_instances', 'host_backend', 'sysfs_root',
                     'simulated_profile', 'state_path', 'enabled',
                     'client_config_token_file', 'feature_type',
                     'auth_type'):
            self.assertIn(name, seen)


class TestInvalidValues(base.TestCase):

    def test_value_shown_unless_secret(self):
        path = self.write_config('[vgpu_nova_ext]\ndevice_timeout = x9\n')
        conf = cfg.ConfigOpts()
        conf.register_opt(cfg.FloatOpt('device_timeout'),
                          group='vgpu_nova_ext')
        loader.parse(conf, [path])
        exc = self.assertRaises(ValueError, lambda:
                                conf.vgpu_nova_ext.device_timeout)
        self.assertIn("device_timeout = 'x9'", loader.invalid(
            conf, 'vgpu_nova_ext', 'device_timeout', exc))
        hidden = loader.invalid(conf, 'vgpu_nova_ext', 'device_timeout',
                                exc, secret=True)
        self.assertNotIn('x9', hidden)
        self.assertIn('[vgpu_nova_ext] device_timeout', hidden)
