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
"""vGPU plugin parameters: the flavor's keys, NVIDIA's rules, the writes.

The extra specs' and NVIDIA's rules' whole tables; the privileged write
against a hostile caller; the simulated driver (refuses while a guest uses
the device); mdevctl's definitions carrying them.
"""

import itertools
import json
import os
import types
import uuid

from tests.unit import base
from tests.unit import lifecycle
from vgpu_nova_ext.devices import allocator
from vgpu_nova_ext import exception
from vgpu_nova_ext.host import simulated
from vgpu_nova_ext.host import vgpu_params
from vgpu_nova_ext.host import writes
from vgpu_nova_ext.nova import extra_specs
from vgpu_nova_ext.vendors import base as vendors_base
from vgpu_nova_ext.vendors import nvidia

PARAMS = extra_specs.VGPU_PARAMS
NVIDIA_PARAMS = ('enable_uvm', 'enable_debugging', 'enable_profiling',
                 'frame_rate_limiter')


class TestExtraSpecs(base.TestCase):
    """Every parameter with every value, and names that are not one."""

    def test_whole_table(self):
        for name, value in itertools.product(
                list(NVIDIA_PARAMS) + ['enable_uvn', 'ENABLE_UVM', '',
                                       'disable_vnc'],
                ['0', '1', ' 1 ', '2', 'true', '', '-1']):
            specs = {PARAMS + name: value, 'resources:VGPU': '1'}
            if name in NVIDIA_PARAMS and value.strip() in ('0', '1'):
                self.assertEqual(((name, value.strip()),),
                                 extra_specs.read(specs).vgpu_params)
                continue
            exc = self.assertRaises(exception.FlavorSpecError,
                                    extra_specs.read, specs)
            self.assertIn(PARAMS + name, str(exc))
            if name in NVIDIA_PARAMS:
                self.assertIn('give one of 0, 1', str(exc))
            else:
                self.assertIn('enable_uvm', str(exc))   # the allowed ones

    def test_several_and_none(self):
        self.assertEqual((), extra_specs.read({}).vgpu_params)
        self.assertEqual(
            (('enable_profiling', '1'), ('frame_rate_limiter', '0')),
            extra_specs.read({PARAMS + 'frame_rate_limiter': '0',
                              PARAMS + 'enable_profiling': '1'}).vgpu_params)


class TestNvidiaRules(base.TestCase):
    """Every series on every board family, each parameter on and off."""

    BOARDS = {'M60': 'maxwell', 'P40': 'pascal', 'V100DX': 'volta',
              'T4': 'turing', 'A40': 'ampere', 'L40S': 'ada',
              'H100': 'hopper', 'RTX Pro 6000 Blackwell DC': 'blackwell'}

    def test_whole_table(self):
        plugin = nvidia.NvidiaVendor()
        for board, series, name, value in itertools.product(
                self.BOARDS, 'QCBA', NVIDIA_PARAMS, '01'):
            info = plugin.describe_type(
                'nvidia-1', 'NVIDIA %s-%s%s' % (
                    board, '1-5' if series == 'C' and board == 'H100'
                    else '4', series), None)
            problem = plugin.vgpu_params_problem(info, ((name, value),))
            refused = (name != 'frame_rate_limiter' and value == '1' and (
                series not in 'QC' or self.BOARDS[board] == 'maxwell'))
            self.assertEqual(refused, problem is not None,
                             (board, series, name, value, problem))
            if refused:
                self.assertIn(name, problem)
                self.assertIn(info.short_name, problem)

    def test_the_allow_list_is_what_nova_api_validates(self):
        self.assertEqual(
            {n: ('0', '1') for n in NVIDIA_PARAMS},
            vendors_base.Vendors([nvidia.NvidiaVendor()]).vgpu_param_values())


class TestContent(base.TestCase):

    def test_parse_and_text(self):
        for content, pairs in (
                ('', ()), ('\n', ()),
                ('enable_uvm=1', (('enable_uvm', '1'),)),
                ('frame_rate_limiter=0, enable_uvm=1\n',
                 (('enable_uvm', '1'), ('frame_rate_limiter', '0')))):
            self.assertEqual(pairs, vgpu_params.parse(content))
            self.assertEqual(pairs, vgpu_params.parse(
                vgpu_params.text(pairs)))
        for bad in ('enable_uvm', 'enable_uvm=1;reboot', 'a=1,a=0',
                    'a=1\nb=2', '../x=1', 'A=1', 'a=', '=1', 'a=1,,b=2',
                    'a=1' * 200, None, b'a=1', 3):
            self.assertRaises(ValueError, vgpu_params.parse, bad)


class TestPrivilegedWrite(base.TestCase):
    """The privileged write trusts nothing its caller passes."""

    MDEV = str(uuid.uuid4())
    VF = '0000:41:00.4'

    def kernel(self):
        ran = []
        return ran, types.SimpleNamespace(
            write=lambda path, value: ran.append((path, value)))

    def test_hostile_arguments_write_nothing(self):
        ran, kernel = self.kernel()
        for kind, device, content in (
                ('mdev', self.MDEV, 'enable_uvm=1;x'),
                ('mdev', self.MDEV, 'enable_uvm=1\nframe_rate_limiter=0'),
                ('mdev', '../../devices/x', 'enable_uvm=1'),
                ('mdev', self.MDEV.upper(), 'enable_uvm=1'),
                ('vf', '0000:41:00.4/../../x', 'enable_uvm=1'),
                ('vf', self.MDEV, 'enable_uvm=1'),
                ('pci', self.VF, 'enable_uvm=1'),
                (None, self.VF, 'enable_uvm=1'),
                ('vf', self.VF, None)):
            self.assertRaises(writes.InvalidHostWrite,
                              writes.set_vgpu_params, self.root, kind,
                              device, content, through=kernel)
        self.assertEqual([], ran)


class TestSimulatedDriver(base.TestCase):

    def setUp(self):
        super().setUp()
        self.backend = simulated.SimulatedBackend('v100x8')
        self.addCleanup(self.backend.close)
        gpu = self.backend.scan().gpus[0]
        self.device = str(uuid.uuid4())
        self.backend.create_device(gpu.parents[0].name, 'nvidia-197',
                                   self.device)

    def test_written_read_cleared(self):
        self.assertEqual((), self.backend.read_vgpu_params('mdev',
                                                           self.device))
        pairs = (('enable_uvm', '1'), ('frame_rate_limiter', '0'))
        self.backend.set_vgpu_params('mdev', self.device, pairs)
        self.assertEqual(pairs, self.backend.read_vgpu_params(
            'mdev', self.device))
        self.backend.set_vgpu_params('mdev', self.device, ())
        self.assertEqual((), self.backend.read_vgpu_params('mdev',
                                                           self.device))
        # A device without the attribute (not NVIDIA's, or gone): None.
        self.assertIsNone(self.backend.read_vgpu_params(
            'mdev', str(uuid.uuid4())))

    def test_refused_while_a_guest_uses_the_device(self):
        self.backend.set_vgpu_params('mdev', self.device,
                                     (('enable_uvm', '1'),))
        with open(os.path.join(self.backend.root, 'sys', 'bus', 'mdev',
                               'devices', self.device,
                               simulated.IN_USE_MARK), 'w') as f:
            f.write(str(uuid.uuid4()))
        exc = self.assertRaises(exception.DeviceBusyError,
                                self.backend.set_vgpu_params, 'mdev',
                                self.device, ())
        self.assertIn(self.device, str(exc))
        self.assertEqual((('enable_uvm', '1'),),
                         self.backend.read_vgpu_params('mdev', self.device))


class TestMdevctlAttrs(base.TestCase):

    def test_definition_carries_them(self):
        path = os.path.join(self.root, 'mdevctl.d')
        device = str(uuid.uuid4())
        writes.write_mdevctl(path, '0000:84:00.0', device, 'nvidia-18',
                             'enable_uvm=1,frame_rate_limiter=0')
        with open(os.path.join(path, '0000:84:00.0', device)) as f:
            self.assertEqual(
                [{'nvidia/vgpu_params': 'enable_uvm=1,frame_rate_limiter=0'}],
                json.load(f)['attrs'])
        writes.write_mdevctl(path, '0000:84:00.0', device, 'nvidia-18')
        with open(os.path.join(path, '0000:84:00.0', device)) as f:
            self.assertEqual([], json.load(f)['attrs'])
        for bad in ('enable_uvm=1"}]', 'x=1\ny=2', None):
            self.assertRaises(writes.InvalidHostWrite, writes.write_mdevctl,
                              path, '0000:84:00.0', device, 'nvidia-18', bad)


class TestKeptDevice(base.TestCase):
    """free_device_policy = keep: a freed device keeps none of its guest's."""

    def test_cleared_when_freed(self):
        al = lifecycle.build(self.root, 'v100x8', free_policy=allocator.KEEP,
                             mdevctl_path=os.path.join(self.root, 'mdevctl'),
                             config='[devices]\nenabled_mdev_types = '
                                    'nvidia-197\n')
        self.addCleanup(al.ledger.close)
        gpu = al.scan().gpus[0]
        (device,) = al.claim('inst', lifecycle.alloc(al, gpu.name)).devices
        pairs = (('enable_uvm', '1'),)
        al.backend.set_vgpu_params('mdev', device.device_id, pairs)
        al.mdevctl.write(al.ledger.get(device.device_id), pairs)
        al.release_instance('inst')
        entry = al.ledger.get(device.device_id)
        self.assertEqual((None, 'free'), (entry.consumer, entry.state))
        self.assertEqual((), al.backend.read_vgpu_params('mdev',
                                                         device.device_id))
        (definition,) = [os.path.join(d, device.device_id) for d, _, files
                         in os.walk(os.path.join(self.root, 'mdevctl'))
                         if device.device_id in files]
        with open(definition) as f:
            self.assertEqual([], json.load(f)['attrs'])
