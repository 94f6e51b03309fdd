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
"""The driver reads what the commands read, from Nova's own parsing.

nova-compute registers ``[devices]`` (nova.conf.devices), parses its command
line (``--config-file``, ``--config-dir``), and its libvirt driver registers
the type groups; the driver reads them through
:func:`vgpu_nova_ext.nova.conf.from_nova_conf`. Each form an operator
writes gives the same configuration there as in the commands.
"""

import os

import fixtures
from nova.conf import devices as nova_devices
from oslo_config import cfg

from tests import configs
from tests import timeout
from tests.unit import conf_forms
from vgpu_nova_ext.nova import conf as nova_conf


class TestFormsInsideNova(timeout.TestCase):

    def nova_conf(self, files, dirs) -> cfg.ConfigOpts:
        conf = cfg.ConfigOpts()
        nova_devices.register_opts(conf)
        args = []
        for path in files:
            args += ['--config-file', path]
        for path in dirs:
            args += ['--config-dir', path]
        conf(args=args, project='nova', default_config_files=[])
        return conf

    def test_forms(self):
        root = self.useFixture(fixtures.TempDir()).path
        for name, form in conf_forms.FORMS.items():
            with self.subTest(form=name):
                where = os.path.join(root, name.replace(' ', '-'))
                os.mkdir(where)
                files, dirs = conf_forms.write(form, where)
                inside = nova_conf.from_nova_conf(
                    self.nova_conf(files, dirs))
                self.assertEqual(form.expected, conf_forms.summary(inside))
                outside = configs.device_config(files, dirs)
                self.assertEqual(conf_forms.summary(outside),
                                 conf_forms.summary(inside))
                self.assertEqual([t.ignored_old for t in outside.types],
                                 [t.ignored_old for t in inside.types])
