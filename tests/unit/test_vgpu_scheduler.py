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
"""NVIDIA's vGPU scheduler per GPU: declared, read, set when idle, a trait.

The options' whole table; the plan's whole table; the privileged step
against a hostile caller; the simulated NVML (refuses while a VM runs,
forgets at a reboot); the real NVML reader and setter against a stand-in
of pynvml's calls (no NVIDIA driver can be loaded here).
"""

import ctypes
import dataclasses
import itertools
import json
import os
import types
import uuid

from tests import configs
from tests.unit import base
from tests.unit import lifecycle
from tests.unit import test_cli
from vgpu_nova_ext.devices import scheduling
from vgpu_nova_ext import exception
from vgpu_nova_ext import findings
from vgpu_nova_ext.host import nvml
from vgpu_nova_ext.host import simulated
from vgpu_nova_ext.host.simulated import vgpu_scheduler_state
from vgpu_nova_ext.host import vgpu_scheduler as vs
from vgpu_nova_ext.host import writes
from vgpu_nova_ext import inventory
from vgpu_nova_ext import mapping

GPU = '0000:84:00.0'
FIXED = vs.SchedulerState(vs.Policy.FIXED_SHARE)


class TestArgument(base.TestCase):
    """``<policy>:<ms>``: every policy with every time slice around 1-30."""

    def test_whole_table(self):
        for policy, ms in itertools.product(
                list(vs.Policy) + ['none', '', 'FIXED_SHARE'],
                ['0', '1', '4', '30', '31', '-1', '1.5', '', ' 4', '٤']):
            argument = '%s:%s' % (policy, ms)
            valid = policy in set(vs.Policy) and ms in ('0', '1', '4', '30') \
                and (ms == '0' or policy != vs.Policy.BEST_EFFORT)
            if valid:
                state = vs.parse_argument(argument)
                self.assertEqual((policy, int(ms) or None),
                                 (state.policy, state.timeslice_ms))
                self.assertEqual(state, vs.parse_argument(state.argument()))
            else:
                self.assertRaises(ValueError, vs.parse_argument, argument)
        for other in (None, 3, b'fixed_share:0', 'fixed_share'):
            self.assertRaises(ValueError, vs.parse_argument, other)

    def test_nvml_numbers(self):
        self.assertEqual(vs.SchedulerState(vs.Policy.FIXED_SHARE, 4),
                         vs.from_nvml(3, 4_000_000))
        self.assertEqual(vs.SchedulerState(vs.Policy.EQUAL_SHARE),
                         vs.from_nvml(2, 0))
        # Best effort has no time slice, whatever NVML's default says.
        self.assertEqual(vs.SchedulerState(vs.Policy.BEST_EFFORT),
                         vs.from_nvml(1, 2_000_000))
        self.assertIsNone(vs.from_nvml(0, 0))     # POLICY_UNKNOWN
        self.assertEqual('CUSTOM_VGPU_SCHED_FIXED_SHARE',
                         vs.trait(vs.Policy.FIXED_SHARE))


class TestOptions(base.TestCase):

    def read(self, *lines):
        path = os.path.join(self.root, 'nova.conf')
        with open(path, 'w') as f:
            f.write('[devices]\nenabled_mdev_types = nvidia-18\n'
                    '[mdev_nvidia-18]\n' + '\n'.join(lines) + '\n')
        return configs.device_config([path])

    def test_valid(self):
        cases = {
            (): None,
            ('vgpu_scheduler = best_effort',):
                vs.SchedulerState(vs.Policy.BEST_EFFORT),
            ('vgpu_scheduler = equal_share',
             'vgpu_scheduler_timeslice_ms = 30'):
                vs.SchedulerState(vs.Policy.EQUAL_SHARE, 30),
            ('vgpu_scheduler = fixed_share',
             'vgpu_scheduler_timeslice_ms = 1'):
                vs.SchedulerState(vs.Policy.FIXED_SHARE, 1),
        }
        for lines, expected in cases.items():
            (tconf,) = self.read(*lines).types
            self.assertEqual(expected, tconf.scheduler, lines)

    def test_refused_naming_the_option_and_value(self):
        slice_ms = 'vgpu_scheduler_timeslice_ms'
        cases = [
            (('vgpu_scheduler = round_robin',), 'vgpu_scheduler'),
            (('vgpu_scheduler = fixed_share', slice_ms + ' = 31'), slice_ms),
            (('vgpu_scheduler = fixed_share', slice_ms + ' = 0'), slice_ms),
            (('vgpu_scheduler = best_effort', slice_ms + ' = 4'),
             slice_ms + ' = 4 with vgpu_scheduler = best_effort'),
            ((slice_ms + ' = 4',), 'vgpu_scheduler = (unset)'),
        ]
        for lines, named in cases:
            exc = self.assertRaises(exception.ConfigError, self.read, *lines)
            self.assertIn('[mdev_nvidia-18]', str(exc), lines)
            self.assertIn(named, str(exc), lines)


def _assignment(gpu, type_id='nvidia-18'):
    served = types.SimpleNamespace(gpu=gpu, type_id=type_id)
    return types.SimpleNamespace(gpus=(served,))


def _config(scheduler):
    tconf = types.SimpleNamespace(type_id='nvidia-18',
                                  group='mdev_nvidia-18', scheduler=scheduler)
    return types.SimpleNamespace(types=(tconf,))


class TestPlan(base.TestCase):
    """Every declared state against every reading: the action."""

    def test_whole_table(self):
        states = [vs.SchedulerState(p, ms) for p in vs.Policy
                  for ms in ((None,) if p == vs.Policy.BEST_EFFORT
                             else (None, 4, 8))]
        backend = simulated.SimulatedBackend('m60')
        self.addCleanup(backend.close)
        gpu = backend.scan().gpus[0]
        for declared, actual, running in itertools.product(
                states, states + [None], (None, 0, 2)):
            vgpus = None if running is None else tuple(
                object() for _ in range(running))
            seen = dataclasses.replace(gpu, vgpu_scheduler=actual,
                                       manager_vgpus=vgpus)
            (step,) = scheduling.plan(_config(declared), _assignment(seen))
            same = actual is not None and actual.policy == declared.policy \
                and declared.timeslice_ms in (None, actual.timeslice_ms)
            if same:
                expected = scheduling.Action.KEEP
            elif actual is None or running is None:
                expected = scheduling.Action.UNKNOWN
            elif running:
                expected = scheduling.Action.WAIT
            else:
                expected = scheduling.Action.APPLY
            self.assertEqual(expected, step.action,
                             (declared, actual, running))
            codes = [p.code for p in scheduling.problems((step,))]
            self.assertEqual({
                scheduling.Action.WAIT: [findings.GPU_SCHEDULER_PENDING],
                scheduling.Action.UNKNOWN: [findings.GPU_SCHEDULER_UNKNOWN],
            }.get(expected, []), codes)
        # A type that declares nothing plans nothing.
        self.assertEqual((), scheduling.plan(_config(None),
                                             _assignment(gpu)))

    def test_one_gpu_s_vfs_under_two_types(self):
        backend = simulated.SimulatedBackend('a100-sriov')
        self.addCleanup(backend.close)
        gpu = dataclasses.replace(backend.scan().gpus[0], manager_vgpus=(),
                                  vgpu_scheduler=vs.SchedulerState(
                                      vs.Policy.BEST_EFFORT))
        assignment = types.SimpleNamespace(gpus=(
            types.SimpleNamespace(gpu=gpu, type_id='nvidia-471'),
            types.SimpleNamespace(gpu=gpu, type_id='nvidia-472')))

        def config(first, second):
            return types.SimpleNamespace(types=tuple(
                types.SimpleNamespace(type_id=t, group='mdev_' + t,
                                      scheduler=state)
                for t, state in (('nvidia-471', first),
                                 ('nvidia-472', second))))
        # The same policy: one step for the GPU.
        (step,) = scheduling.plan(config(FIXED, FIXED), assignment)
        self.assertEqual(scheduling.Action.APPLY, step.action)
        # Two: neither is set, and check says why.
        equal = vs.SchedulerState(vs.Policy.EQUAL_SHARE)
        (step,) = scheduling.plan(config(FIXED, equal), assignment)
        self.assertEqual(scheduling.Action.CONFLICT, step.action)
        self.assertEqual([findings.GPU_SCHEDULER_CONFLICT],
                         [p.code for p in scheduling.problems((step,))])
        self.assertEqual(([], []), scheduling.apply(None, (step,)))
        # One declares, the other does not: the one is set.
        (step,) = scheduling.plan(config(None, equal), assignment)
        self.assertEqual(scheduling.Action.APPLY, step.action)


class TestPrivilegedStep(base.TestCase):
    """The privileged step trusts nothing its caller passes."""

    def test_hostile_arguments_run_nothing(self):
        ran = []
        kernel = types.SimpleNamespace(
            mig_command=lambda *a: ran.append(a))
        for argument in ('fixed_share', 'fixed_share:99', 'x:0', None,
                         'fixed_share:0; reboot', '../../:0',
                         'best_effort:5', 'fixed_share:0\n'):
            self.assertRaises(writes.InvalidHostWrite, writes.mig_command,
                              self.root, GPU, 'vgpu_scheduler', argument,
                              through=kernel)
        for gpu in ('0000:84:00.0/../..', '84:00.0 ', None):
            self.assertRaises(writes.InvalidHostWrite, writes.mig_command,
                              self.root, gpu, 'vgpu_scheduler',
                              'fixed_share:0', through=kernel)
        self.assertEqual([], ran)
        writes.mig_command(self.root, GPU, 'vgpu_scheduler', 'fixed_share:4',
                           through=kernel)
        self.assertEqual([('vgpu_scheduler', GPU, 'fixed_share:4')], ran)


class SimulatedCase(base.TestCase):

    def setUp(self):
        super().setUp()
        self.al = lifecycle.build(self.root, 'm60', config=(
            '[devices]\nenabled_mdev_types = nvidia-18\n[mdev_nvidia-18]\n'
            'vgpu_scheduler = fixed_share\n'
            'vgpu_scheduler_timeslice_ms = 4\n'))
        self.addCleanup(self.al.ledger.close)
        self.conf = configs.device_config(
            [os.path.join(self.root, 'nova.conf')])
        self.host_root = self.al.backend.root

    def planned(self):
        self.al.targets = lifecycle.targets_of(self.al, self.conf)
        return scheduling.plan(self.conf, mapping.assign(self.conf,
                                                         self.al.scan()))

    def gpu(self, address=GPU):
        return next(g for g in self.al.scan().gpus if g.address == address)


class TestSimulatedNvml(SimulatedCase):

    def test_not_offered_means_unknown_and_nothing_set(self):
        self.assertIsNone(self.gpu().vgpu_scheduler)
        planned = self.planned()
        self.assertEqual({scheduling.Action.UNKNOWN},
                         {p.action for p in planned})
        self.assertEqual(([], []), self.al.set_vgpu_schedulers(planned))
        self.assertEqual((), inventory.host_traits(self.gpu()))
        # Asked anyway (a caller that did not plan): the driver refuses.
        self.assertRaises(exception.DeviceError, self.al.backend.mig_command,
                          GPU, 'vgpu_scheduler', 'fixed_share:4')

    def test_set_when_idle_refused_while_a_vm_runs(self):
        vgpu_scheduler_state.offer(self.host_root)
        self.assertEqual(vs.SchedulerState(vs.Policy.BEST_EFFORT),
                         self.gpu().vgpu_scheduler)
        # A guest runs a vGPU on the second GPU only.
        other = next(g for g in self.al.scan().gpus if g.address != GPU)
        used = str(uuid.uuid4())
        self.al.backend.create_device(other.parents[0].name, 'nvidia-18',
                                      used)
        with open(os.path.join(self.host_root, 'sys/bus/mdev/devices', used,
                               simulated.IN_USE_MARK), 'w') as f:
            f.write(str(uuid.uuid4()))
        planned = {p.gpu: p for p in self.planned()}
        self.assertEqual(scheduling.Action.APPLY, planned[GPU].action)
        self.assertEqual(scheduling.Action.WAIT,
                         planned[other.address].action)
        done, failed = self.al.set_vgpu_schedulers(tuple(planned.values()))
        self.assertEqual(([GPU], []), (done, failed))
        self.assertEqual(vs.SchedulerState(vs.Policy.FIXED_SHARE, 4),
                         self.gpu().vgpu_scheduler)
        self.assertIn('CUSTOM_VGPU_SCHED_FIXED_SHARE',
                      inventory.host_traits(self.gpu()))
        self.assertIn('CUSTOM_VGPU_SCHED_BEST_EFFORT',
                      inventory.host_traits(self.gpu(other.address)))
        # The driver itself refuses the busy GPU, whatever a caller says.
        exc = self.assertRaises(exception.DeviceError,
                                self.al.backend.mig_command, other.address,
                                'vgpu_scheduler', 'fixed_share:4')
        self.assertIn(other.address, str(exc))
        # A plan made before a guest started: the refusal is a finding.
        stale = dataclasses.replace(planned[other.address],
                                    action=scheduling.Action.APPLY)
        done, failed = self.al.set_vgpu_schedulers((stale,))
        self.assertEqual([], done)
        self.assertEqual([findings.GPU_SCHEDULER_FAILED],
                         [p.code for p in failed])
        # Idle again: set at the next plan.
        os.unlink(os.path.join(self.host_root, 'sys/bus/mdev/devices', used,
                               simulated.IN_USE_MARK))
        self.al.set_vgpu_schedulers(self.planned())
        self.assertEqual(FIXED.policy,
                         self.gpu(other.address).vgpu_scheduler.policy)

    def test_a_reboot_forgets_it(self):
        vgpu_scheduler_state.offer(self.host_root)
        self.al.set_vgpu_schedulers(self.planned())
        self.assertEqual(vs.Policy.FIXED_SHARE,
                         self.gpu().vgpu_scheduler.policy)
        self.al.backend.reboot()
        self.assertEqual(vs.SchedulerState(vs.Policy.BEST_EFFORT),
                         self.gpu().vgpu_scheduler)
        self.assertEqual({scheduling.Action.APPLY},
                         {p.action for p in self.planned()})


class _NvmlError(Exception):
    pass


class TestNvmlCalls(base.TestCase):
    """The reader and the setter against pynvml's structures."""

    def stand_in(self, policy, arr, timeslice):
        params = types.SimpleNamespace(
            vgpuSchedData=types.SimpleNamespace(timeslice=timeslice),
            vgpuSchedDataWithARR=types.SimpleNamespace(
                avgFactor=0, timeslice=timeslice * 2))
        calls = types.SimpleNamespace(
            NVMLError=_NvmlError,
            NVML_VGPU_SCHEDULER_ARR_DEFAULT=0,
            NVML_VGPU_SCHEDULER_ARR_ENABLE=2,
            nvmlDeviceGetVgpuSchedulerState=lambda handle: (
                types.SimpleNamespace(schedulerPolicy=policy, arrMode=arr,
                                      schedulerParams=params)),
            nvmlDeviceGetHandleByPciBusId=lambda address: 'handle',
            set_calls=[])

        class SetParams(ctypes.Union):
            _fields_ = [('vgpuSchedData', type(
                'D', (ctypes.Structure,),
                {'_fields_': [('timeslice', ctypes.c_uint)]}))]

        class SetState(ctypes.Structure):
            _fields_ = [('schedulerPolicy', ctypes.c_uint),
                        ('enableARRMode', ctypes.c_uint),
                        ('schedulerParams', SetParams)]
        calls.c_nvmlVgpuSchedulerSetState_t = SetState
        calls.nvmlDeviceSetVgpuSchedulerState = lambda h, s: (
            calls.set_calls.append((h, s.schedulerPolicy, s.enableARRMode,
                                    s.schedulerParams.vgpuSchedData
                                    .timeslice)))
        return calls

    def test_read(self):
        source = nvml.Nvml(self.stand_in(3, 0, 4_000_000))
        self.assertEqual(vs.SchedulerState(vs.Policy.FIXED_SHARE, 4),
                         source._scheduler('handle'))
        # Adaptive round robin: the time slice in the union's other half.
        source = nvml.Nvml(self.stand_in(2, 2, 4_000_000))
        self.assertEqual(vs.SchedulerState(vs.Policy.EQUAL_SHARE, 8),
                         source._scheduler('handle'))

    def test_not_supported_means_unknown(self):
        calls = self.stand_in(1, 0, 0)

        def refuses(handle):
            raise _NvmlError('NVML_ERROR_NOT_SUPPORTED')
        calls.nvmlDeviceGetVgpuSchedulerState = refuses
        self.assertIsNone(nvml.Nvml(calls)._scheduler('handle'))

    def test_set(self):
        calls = self.stand_in(1, 0, 0)
        nvml.Nvml(calls).set_vgpu_scheduler(
            GPU, vs.SchedulerState(vs.Policy.FIXED_SHARE, 4))
        self.assertEqual([('handle', 3, 0, 4_000_000)], calls.set_calls)

    def test_refusal_named(self):
        calls = self.stand_in(1, 0, 0)

        def refuses(handle, state):
            raise _NvmlError('NVML_ERROR_IN_USE')
        calls.nvmlDeviceSetVgpuSchedulerState = refuses
        exc = self.assertRaises(
            exception.DeviceError, nvml.Nvml(calls).set_vgpu_scheduler, GPU,
            FIXED)
        self.assertIn(GPU, str(exc))
        self.assertIn('fixed_share', str(exc))
        self.assertIn('NVML_ERROR_IN_USE', str(exc))


class TestCommands(test_cli.CLITestCase):

    def test_check_and_inventory(self):
        conf = os.path.join(self.root, 'nova.conf')
        with open(conf, 'w') as f:
            f.write('[devices]\nenabled_mdev_types = nvidia-18\n'
                    '[mdev_nvidia-18]\nvgpu_scheduler = equal_share\n')
        common = ('--simulate', 'm60', '--config-file', conf,
                  '--state-path', os.path.join(self.root, 'state'))
        code, out, err = self.run_cli(*common, 'check')
        self.assertIn('gpu.scheduler_unknown', out)
        self.assertIn('[mdev_nvidia-18] vgpu_scheduler', out)
        code, out, err = self.run_cli(*common, 'inventory', '--format',
                                      'json')
        self.assertEqual(0, code, err)
        body = json.loads(out)
        self.assertEqual(
            {('0000:84:00.0', 'equal_share', None, 'unknown'),
             ('0000:85:00.0', 'equal_share', None, 'unknown')},
            {(s['address'], s['declared'], s['in_force'], s['action'])
             for s in body['vgpu_schedulers']})
        self.assertNoTraceback(out, err)
