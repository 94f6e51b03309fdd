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
"""The release gate and the features found in the Nova installed here.

Each nova-functional environment installs one supported release; these
tests hold on each of them.
"""

import os
from unittest import mock


from tests import timeout
from vgpu_nova_ext import exception
from vgpu_nova_ext.nova import compat


class TestReleaseGate(timeout.TestCase):

    def setUp(self):
        super().setUp()
        self.compat = compat
        try:
            import nova  # noqa: F401
        except ImportError:
            message = 'the nova package is missing'
            if os.environ.get('VGPU_NOVA_EXT_REQUIRE_NOVA'):
                self.fail(message)
            self.skipTest(message)

    def major(self) -> int:
        return int(self.compat.nova_version().split('.')[0])

    def test_this_release_is_supported(self):
        self.assertEqual(self.compat.nova_version(), self.compat.check_nova())
        self.assertIn(self.major(), self.compat.SUPPORTED_MAJORS)

    def test_other_releases_refused_with_the_reason(self):
        for version in ('31.3.1', '35.0.0', 'not-a-version'):
            # The installed Nova is a supported one; another release cannot
            # be installed beside it, so its version is what is replaced.
            with mock.patch.object(self.compat, 'nova_version',
                                   return_value=version):
                exc = self.assertRaises(exception.VGPUNovaExtError,
                                        self.compat.check_nova)
            message = str(exc)
            self.assertIn('not Nova %s' % version, message)
            self.assertIn('32.x (2025.2 Flamingo), 33.x (2026.1 Gazpacho), '
                          '34.x (2026.2 Hibiscus)', message)

    def test_features_found_as_each_release_has_them(self):
        # Nova 34 marks its providers with OWNER_NOVA and makes Cyborg's
        # mdevs itself; 32 and 33 do neither (../shared/FIELD-NOTES.md).
        features = self.compat.features()
        newest = self.major() >= 34
        self.assertEqual((newest, newest),
                         (features.owner_trait, features.cyborg_mdevs))
