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
"""Opening below a root with every link resolved by the walk itself."""

import json
import os
import uuid

from tests import timeout
from tests.unit import base
from vgpu_nova_ext.host import confined
from vgpu_nova_ext.host import writes


class TestOpenBelow(timeout.TestCase):

    def setUp(self):
        super().setUp()
        self.root = self.useFixture(base.fixtures.TempDir()).path
        self.device = os.path.join(self.root, 'devices', 'pci0000:80',
                                   '0000:84:00.0')
        os.makedirs(self.device)
        with open(os.path.join(self.device, 'remove'), 'w'):
            pass
        os.makedirs(os.path.join(self.root, 'bus', 'pci', 'devices'))
        self.link('bus/pci/devices/0000:84:00.0',
                  '../../../devices/pci0000:80/0000:84:00.0')

    def link(self, where: str, target: str) -> None:
        os.symlink(target, os.path.join(self.root, *where.split('/')))

    def open(self, *parts: str):
        fd, names = confined.open_below(self.root, parts, os.O_WRONLY)
        self.addCleanup(os.close, fd)
        return names

    def test_links_inside_are_followed_and_named(self):
        self.assertEqual(
            ('devices', 'pci0000:80', '0000:84:00.0', 'remove'),
            self.open('bus', 'pci', 'devices', '0000:84:00.0', 'remove'))
        # ".." goes back along the walk, links resolved, as the kernel's.
        self.assertEqual(
            ('devices', 'pci0000:80', '0000:84:00.0', 'remove'),
            self.open('bus', 'pci', 'devices', '0000:84:00.0', '..',
                      '0000:84:00.0', 'remove'))

    def test_climbing_above_the_root_is_refused(self):
        for parts in (('..', 'etc', 'passwd'),
                      ('devices', '..', '..', 'x')):
            exc = self.assertRaises(confined.Refused, confined.open_below,
                                    self.root, parts, os.O_WRONLY)
            self.assertIn('climbs above %s' % self.root, str(exc))
        self.link('bus/pci/devices/up', '../../../..')
        self.assertRaises(confined.Refused, confined.open_below, self.root,
                          ('bus', 'pci', 'devices', 'up', 'x'), os.O_WRONLY)

    def test_absolute_links_are_refused(self):
        self.link('bus/pci/devices/abs', self.device)
        exc = self.assertRaises(
            confined.Refused, confined.open_below, self.root,
            ('bus', 'pci', 'devices', 'abs', 'remove'), os.O_WRONLY)
        self.assertIn('is a link to the absolute path %s' % self.device,
                      str(exc))

    def test_a_loop_is_refused(self):
        self.link('bus/a', 'b')
        self.link('bus/b', 'a')
        exc = self.assertRaises(confined.Refused, confined.open_below,
                                self.root, ('bus', 'a', 'x'), os.O_WRONLY)
        self.assertIn('more than %d links' % confined.MAX_LINKS, str(exc))

    def test_the_file_itself_is_never_a_link(self):
        # sysfs attributes are files: a link in their place is refused.
        self.link('bus/remove', '../devices/pci0000:80/0000:84:00.0/remove')
        exc = self.assertRaises(confined.Refused, confined.open_below,
                                self.root, ('bus', 'remove'), os.O_WRONLY)
        self.assertIn('%s is a link, not a file' % os.path.join(
            self.root, 'bus', 'remove'), str(exc))

    def test_only_a_regular_file(self):
        # A FIFO would block a writer's open; a directory is no attribute.
        os.mkfifo(os.path.join(self.device, 'fifo'))
        exc = self.assertRaises(confined.Refused, confined.open_below,
                                self.root, ('devices', 'pci0000:80',
                                            '0000:84:00.0', 'fifo'),
                                os.O_RDONLY)
        self.assertIn('is not a regular file', str(exc))
        self.assertRaises(IsADirectoryError, confined.open_below,
                          self.root, ('devices',), os.O_WRONLY)

    def test_what_is_not_there_is_the_kernels_error(self):
        self.assertRaises(FileNotFoundError, confined.open_below, self.root,
                          ('bus', 'mdev', 'devices', 'x', 'remove'),
                          os.O_WRONLY)
        self.assertRaises(NotADirectoryError, confined.open_below,
                          self.root, ('devices', 'pci0000:80',
                                      '0000:84:00.0', 'remove', 'x'),
                          os.O_WRONLY)


class TestMdevctlFiles(timeout.TestCase):

    def setUp(self):
        super().setUp()
        self.top = self.useFixture(base.fixtures.TempDir()).path
        self.path = os.path.join(self.top, 'mdevctl.d')

    def test_written_readable_whatever_the_umask(self):
        device = str(uuid.uuid4())
        old = os.umask(0o077)
        try:
            writes.write_mdevctl(self.path, '0000:84:00.0', device,
                                 'nvidia-18')
        finally:
            os.umask(old)
        path = os.path.join(self.path, '0000:84:00.0', device)
        self.assertEqual(0o644, os.stat(path).st_mode & 0o777)
        with open(path) as f:
            self.assertEqual('nvidia-18', json.load(f)['mdev_type'])
        self.assertEqual([device], os.listdir(os.path.dirname(path)))
        writes.remove_mdevctl(self.path, '0000:84:00.0', device)
        self.assertEqual([], os.listdir(os.path.dirname(path)))
        # Gone already, or a parent never written: nothing to do.
        writes.remove_mdevctl(self.path, '0000:84:00.0', device)
        writes.remove_mdevctl(self.path, '0000:85:00.0', device)

    def test_a_parent_that_is_a_link_is_refused(self):
        elsewhere = os.path.join(self.top, 'elsewhere')
        os.makedirs(elsewhere)
        os.makedirs(self.path)
        os.symlink(elsewhere, os.path.join(self.path, '0000:84:00.0'))
        device = str(uuid.uuid4())
        with open(os.path.join(elsewhere, device), 'w'):
            pass
        for call, args in ((writes.write_mdevctl, (device, 'nvidia-18')),
                           (writes.remove_mdevctl, (device,))):
            exc = self.assertRaises(writes.InvalidHostWrite, call,
                                    self.path, '0000:84:00.0', *args)
            self.assertIn('is not a directory (a link?)', str(exc))
        self.assertEqual([device], os.listdir(elsewhere))
