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
"""The vgpu_nova_ext: flavor extra specs, read by the driver."""

from tests import timeout
from vgpu_nova_ext import exception
from vgpu_nova_ext.host import model
from vgpu_nova_ext.nova import extra_specs

Display = extra_specs.Display


class TestRead(timeout.TestCase):

    def test_values(self):
        for specs, expected in (
                (None, Display.OFF),
                ({}, Display.OFF),
                ({'resources:VGPU': '1', 'hw:cpu_policy': 'x'}, Display.OFF),
                ({'vgpu_nova_ext:display': 'off'}, Display.OFF),
                ({'vgpu_nova_ext:display': 'on'}, Display.ON),
                ({'vgpu_nova_ext:display': ' ON '}, Display.ON),
                ({'vgpu_nova_ext:display': 'ramfb'}, Display.RAMFB)):
            self.assertEqual(expected, extra_specs.read(specs).display,
                             specs)

    def test_wrong_ones_named(self):
        for specs, named in (
                ({'vgpu_nova_ext:display': 'yes'}, "'yes'"),
                ({'vgpu_nova_ext:display': ''}, "''"),
                ({'vgpu_nova_ext:display': 'x' * 500}, 'off, on, ramfb'),
                ({'vgpu_nova_ext:dispaly': 'on'}, 'vgpu_nova_ext:dispaly'),
                ({'vgpu_nova_ext:': 'on'}, 'flavor unset')):
            exc = self.assertRaises(exception.FlavorSpecError,
                                    extra_specs.read, specs)
            self.assertIn(named, str(exc))
            self.assertLess(len(str(exc)), 400)


class TestDisplayProblem(timeout.TestCase):

    def test_table(self):
        for kind, series, refused in (
                (model.MDEV, 'Q', False), (model.MDEV, 'B', False),
                (model.MDEV, 'A', False), (model.MDEV, None, False),
                (model.MDEV, 'C', True), (model.VF, 'Q', True),
                (model.VF, 'C', True)):
            problem = extra_specs.display_problem(kind, 'nvidia-1', series)
            self.assertEqual(refused, problem is not None, (kind, series))
            if problem:
                self.assertIn('vgpu_nova_ext:display', problem)
