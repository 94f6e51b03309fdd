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
"""One type-id rule: nova.conf, a host write and a profile agree."""

import os

import fixtures
import testtools

from tests import configs
from vgpu_nova_ext import exception
from vgpu_nova_ext.host import model
from vgpu_nova_ext.host import writes

#: (type id, what the kernel could name a type so)
CANDIDATES = (
    ('nvidia-35', True),
    ('i915-GVTg_V5_4', True),
    ('mtty-1', True),
    ('nvidia-1414', True),
    ('a:b.c_d-e', True),
    ('x' * 64, True),
    ('x' * 65, False),
    ('.hidden', False),
    ('-leading', False),
    ('a/b', False),
    ('../nvidia-35', False),
    ('nvidia 35', False),
    ('nvidia+35', False),
    ('nvidia-35\n', False),
    ('', False),
)


class TestOneRule(testtools.TestCase):

    def test_the_rule(self):
        for type_id, fine in CANDIDATES:
            self.assertEqual(fine, bool(model.TYPE_ID_RE.match(type_id)),
                             repr(type_id))

    def test_a_host_write_refuses_what_the_rule_refuses(self):
        for type_id, fine in CANDIDATES:
            if fine:
                self.assertEqual(type_id, writes._type(type_id))
            else:
                self.assertRaises(writes.InvalidHostWrite, writes._type,
                                  type_id)

    def test_nova_conf_refuses_what_the_rule_refuses(self):
        root = self.useFixture(fixtures.TempDir()).path
        path = os.path.join(root, 'nova.conf')
        for type_id, fine in CANDIDATES:
            if not type_id.strip() or '\n' in type_id:
                continue    # not a value a list option can hold
            with open(path, 'w') as f:
                f.write('[devices]\nenabled_mdev_types = %s\n' % type_id)
            if fine:
                config = configs.device_config([path])
                self.assertEqual([type_id],
                                 [t.type_id for t in config.types])
            else:
                self.assertRaises(exception.ConfigError,
                                  configs.device_config, [path])

    def test_no_trailing_newline_through_the_privileged_names(self):
        # "$" matches before a final newline; these names reach paths and
        # commands run as root.
        from vgpu_nova_ext.host import address
        from vgpu_nova_ext.host import mig
        self.assertTrue(mig.is_profile_name('1g.10gb'))
        self.assertFalse(mig.is_profile_name('1g.10gb\n'))
        self.assertRaises(writes.InvalidHostWrite, writes._name, 'parent',
                          'pci_0000_84_00_0\n')
        # An operator's address is trimmed first (a value of nova.conf).
        self.assertEqual('mdev-parent', address.parse_device_address(
            'mdev-parent\n').value)
