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
"""MIG layouts: placed, carved in NVIDIA's order, kept across crashes."""

import collections
import itertools
import os

from tests import configs
from tests.unit import base
from tests.unit import lifecycle
from tests.unit import test_cli
from vgpu_nova_ext.devices import mig_layout
from vgpu_nova_ext import exception
from vgpu_nova_ext import findings
from vgpu_nova_ext.host import mig
from vgpu_nova_ext.host import simulated
from vgpu_nova_ext.host import vfio
from vgpu_nova_ext import mapping

GPU = '0000:19:00.0'


def h200_profiles() -> dict[str, mig.GIProfile]:
    spec = simulated.load_profile('h200-vfio').gpus[0].model
    return spec.mig_profile_map()


def mig_models() -> dict[str, dict[str, mig.GIProfile]]:
    """{profile/model: GPU instance profiles} of each built-in MIG GPU."""
    out = {}
    for name in simulated.builtin_profiles():
        for gpu in simulated.load_profile(name).gpus:
            profiles = gpu.model.mig_profile_map()
            if profiles:
                out['%s/%s' % (name, gpu.model.name)] = profiles
    return out


def arrangements(profiles: dict[str, mig.GIProfile]) -> set[frozenset]:
    """Every layout that can be placed, found by walking the slices.

    Independent of :func:`mig.fit`: from slice 0 up, each slice is left
    free or starts an instance of a profile placed there that fits; every
    arrangement of instances is one walk. Returns each arrangement's
    layout as a frozenset of (profile, count).
    """
    found = set()

    def walk(i, counts):
        if i >= mig.SLICES:
            found.add(frozenset((n, c) for n, c in counts.items() if c))
            return
        walk(i + 1, counts)
        for p in profiles.values():
            if i in p.placements and i + p.size <= mig.SLICES:
                counts[p.name] = counts.get(p.name, 0) + 1
                walk(i + p.size, counts)
                counts[p.name] -= 1
    walk(0, {})
    found.discard(frozenset())
    return found


class TestFitWholeTable(base.TestCase):
    """Every layout of every built-in MIG GPU: placed iff it can be."""

    def test_every_layout(self):
        models = mig_models()
        self.assertEqual(
            {'a100-mig-vfio', 'h100-vfio', 'h200-vfio',
             'rtx-pro-6000-bw-vfio'},
            {k.split('/')[0] for k in models})
        for model, profiles in models.items():
            feasible = arrangements(profiles)
            names = sorted(profiles)
            tried = accepted = 0
            for counts in itertools.product(*(
                    range(mig.SLICES // profiles[n].size + 2)
                    for n in names)):
                wanted = {n: c for n, c in zip(names, counts) if c}
                if not wanted:
                    continue
                tried += 1
                key = frozenset(wanted.items())
                if key in feasible:
                    accepted += 1
                    self.assertValidPlacement(profiles, wanted, mig.fit(
                        profiles, wanted), model)
                else:
                    exc = self.assertRaises(mig.LayoutError, mig.fit,
                                            profiles, wanted)
                    self.assertIn('%s does not fit' % mig.words(wanted),
                                  str(exc), model)
            # Every placeable layout was among those tried.
            self.assertEqual(len(feasible), accepted, model)
            self.assertGreater(tried, accepted, model)

    def assertValidPlacement(self, profiles, wanted, placed, model):
        used = set()
        for name, start in placed:
            profile = profiles[name]
            self.assertIn(start, profile.placements, (model, wanted))
            span = set(range(start, start + profile.size))
            self.assertFalse(span & used, (model, wanted, placed))
            self.assertLessEqual(start + profile.size, mig.SLICES)
            used |= span
        self.assertEqual(wanted, dict(collections.Counter(
            n for n, _ in placed)), model)
        # Larger instances are created first.
        sizes = [profiles[n].size for n, _ in placed]
        self.assertEqual(sorted(sizes, reverse=True), sizes, model)

    def test_layouts_a_first_fit_refused(self):
        # Each placed by a search, where the first free slice in a fixed
        # order fails (4g.71gb then 3g.71gb at 0: none left for 3g).
        profiles = h200_profiles()
        self.assertEqual([('4g.71gb', 0), ('3g.71gb', 4)], mig.fit(
            profiles, {'4g.71gb': 1, '3g.71gb': 1}))
        for layout in ({'2g.35gb': 3, '1g.35gb': 1},
                       {'3g.71gb': 1, '2g.35gb': 1, '1g.35gb': 1}):
            placed = mig.fit(profiles, layout)
            self.assertValidPlacement(profiles, layout, placed, 'h200')


class TestFit(base.TestCase):

    def test_seven_small_instances(self):
        placed = mig.fit(h200_profiles(), {'1g.18gb': 7})
        self.assertEqual([('1g.18gb', s) for s in range(7)], placed)

    def test_larger_instances_first(self):
        placed = mig.fit(h200_profiles(),
                         {'1g.18gb': 1, '2g.35gb': 1, '3g.71gb': 1})
        self.assertEqual([('3g.71gb', 0), ('2g.35gb', 4), ('1g.18gb', 6)],
                         placed)

    def test_what_does_not_fit_is_explained(self):
        exc = self.assertRaises(mig.LayoutError, mig.fit, h200_profiles(),
                                {'3g.71gb': 2, '1g.18gb': 1})
        for fragment in ('1g.18gb: 1, 3g.71gb: 2 does not fit',
                         'takes 1 of the GPU\'s 8 memory slices',
                         'start at slice 0/1/2/3/4/5/6',
                         '0 fit beside the larger instances',
                         'free slices: none'):
            self.assertIn(fragment, str(exc))

    def test_unknown_profile_names_the_ones_there_are(self):
        exc = self.assertRaises(mig.LayoutError, mig.fit, h200_profiles(),
                                {'1g.10gb': 7})
        self.assertIn('1g.10gb is not one this GPU has', str(exc))
        self.assertIn('7g.141gb (8 slice(s), at most 1)', str(exc))

    def test_parse_layout(self):
        self.assertEqual({'1g.18gb': 7, '3g.71gb': 1},
                         mig.parse_layout('1g.18gb:7, 3g.71gb: 1'))
        self.assertEqual({'1g.18gb': 3}, mig.parse_layout(
            '1g.18gb:1,1g.18gb:2'))
        for bad in ('1g.18gb', '1g.18gb:x', 'big:1', '1g.18gb:-1'):
            self.assertRaises(ValueError, mig.parse_layout, bad)


class MigTestCase(base.TestCase):

    layout = '1g.18gb:7'

    def setUp(self):
        super().setUp()
        self.al = self.build(self.layout)

    def build(self, layout):
        al = lifecycle.build(self.root, 'h200-vfio', config=self.config(
            layout))
        self.addCleanup(al.ledger.close)
        return al

    def config(self, layout):
        return ('[devices]\nenabled_mdev_types = nvidia-1414\n'
                '[mdev_nvidia-1414]\ndevice_addresses = %s\n'
                'mig_gpu_instances = %s\n' % (GPU, layout))

    def device_config(self):
        return configs.device_config(
            [os.path.join(self.root, 'nova.conf')])

    def gpu(self, al=None):
        return next(g for g in (al or self.al).backend.scan().gpus
                    if g.address == GPU)

    def vf_file(self, vf, name):
        with open(os.path.join(self.al.backend.root, 'sys', 'bus', 'pci',
                               'devices', vf, 'nvidia', name)) as f:
            return f.read()


class TestCarve(MigTestCase):

    #: Another layout the type can run on (it keeps 1g.18gb instances).
    CHANGED = '1g.18gb:4, 3g.71gb:1'

    def test_clean_gpu_carved_and_served(self):
        self.assertEqual(mig.MigState(enabled=False), self.gpu().mig)
        result = self.al.carve_mig_layouts(self.device_config())
        self.assertEqual([mig_layout.CARVE],
                         [g.action for g in result.gpus])
        state = self.gpu().mig
        self.assertTrue(state.enabled)
        self.assertEqual({'1g.18gb': 7}, state.layout())
        self.assertEqual(list(range(7)), [gi.start for gi in
                                          state.instances])
        self.assertEqual({}, self.al.ledger.mig_intents())
        # The VFs offer the MIG-backed type now, and only it.
        vf = self.gpu().parents[0]
        self.assertEqual([(1414, 'NVIDIA H200X-1-18C')],
                         vfio.parse_creatable(self.vf_file(
                             vf.address, vfio.CREATABLE)))
        plan = mapping.assign(self.device_config(), self.al.scan())
        (served,) = plan.gpus
        self.assertEqual(('nvidia-1414', 7),
                         (served.type_id, served.capacity))
        self.assertEqual('1g.18gb', served.type_info.gpu_instance_profile)
        # Again: nothing to do.
        again = self.al.carve_mig_layouts(self.device_config())
        self.assertEqual([mig_layout.KEEP], [g.action for g in again.gpus])

    def test_a_vgpu_lands_on_an_instance(self):
        self.al.carve_mig_layouts(self.device_config())
        self.al.targets = lifecycle.targets_of(self.al, self.device_config())
        claim = self.al.claim('inst', lifecycle.alloc(
            self.al, 'pci_0000_19_00_0'))
        (device,) = claim.devices
        self.assertEqual('1\n', self.vf_file(device.device_id,
                                             'gpu_instance_id'))
        self.assertEqual('1414\n', self.vf_file(device.device_id,
                                                vfio.CURRENT))
        plan = mapping.assign(self.device_config(), self.al.scan())
        self.assertEqual((1, 7), (plan.gpus[0].used, plan.gpus[0].capacity))

    def test_crash_while_carving_is_carved_again(self):
        # The step that dies: the third GPU instance. Raised from the
        # backend, where a crash of nova-compute would stop the sequence
        # (the intent recorded, the GPU half carved).
        backend = self.al.backend
        real = backend.mig_command
        calls = []

        def dies_on_the_third_instance(gpu, command, argument=''):
            calls.append(command)
            if calls.count('create_gpu_instance') == 3:
                raise exception.DeviceError('killed')
            return real(gpu, command, argument)

        backend.mig_command = dies_on_the_third_instance
        self.assertRaises(exception.DeviceError,
                          self.al.carve_mig_layouts, self.device_config())
        self.assertEqual({GPU: '1g.18gb: 7'}, self.al.ledger.mig_intents())
        self.assertEqual({'1g.18gb': 2}, self.gpu().mig.layout())
        self.assertEqual(['mig_mode', 'sriov_manage', 'create_gpu_instance',
                          'create_gpu_instance', 'create_gpu_instance'],
                         calls)
        # The next start (a new allocator on the same host and ledger).
        after = self.build(self.layout)
        result = after.carve_mig_layouts(self.device_config())
        self.assertEqual([mig_layout.CARVE], [g.action for g in result.gpus])
        self.assertEqual({'1g.18gb': 7}, self.gpu(after).mig.layout())
        self.assertEqual({}, after.ledger.mig_intents())

    def test_carved_as_planned_or_not_at_all(self):
        """The instances come back where the plan put them.

        A driver that places them elsewhere (nvidia-smi without NVML picks
        the placement itself): the GPU is emptied again, the error names
        the plan and the result, the intent stays for the next start.
        """
        al = self.build('1g.18gb:2')
        real = al.backend.mig_command

        def places_from_the_top(gpu, command, argument=''):
            if command == 'create_gpu_instance':
                profile = argument.partition(':')[0]
                taken = {gi.start for gi in self.gpu(al).mig.instances}
                start = max(s for s in range(7) if s not in taken)
                argument = '%s:%d' % (profile, start)
            return real(gpu, command, argument)

        al.backend.mig_command = places_from_the_top
        exc = self.assertRaises(exception.DeviceError,
                                al.carve_mig_layouts, self.device_config())
        for fragment in (GPU, 'not as planned', '1g.18gb at slice 0',
                         '1g.18gb at slice 6', 'nvidia-ml-py'):
            self.assertIn(fragment, str(exc))
        self.assertEqual({}, self.gpu(al).mig.layout())
        self.assertEqual({GPU: '1g.18gb: 2'}, al.ledger.mig_intents())
        al.backend.mig_command = real
        al.carve_mig_layouts(self.device_config())
        self.assertEqual([0, 1], [gi.start for gi in
                                  self.gpu(al).mig.instances])

    def test_layout_change_while_a_guest_holds_a_vgpu_is_refused(self):
        self.al.carve_mig_layouts(self.device_config())
        self.al.targets = lifecycle.targets_of(self.al, self.device_config())
        (device,) = self.al.claim('inst', lifecycle.alloc(
            self.al, 'pci_0000_19_00_0')).devices
        before = self.gpu().mig
        changed = self.build(self.CHANGED)
        result = changed.carve_mig_layouts(self.device_config())
        self.assertEqual([mig_layout.REFUSED],
                         [g.action for g in result.gpus])
        (problem,) = result.problems
        self.assertEqual(('mig.layout_in_use', findings.WARNING),
                         (problem.code, problem.severity))
        self.assertIn(device.device_id, problem.why)
        self.assertIn('restart nova-compute', problem.fix)
        # Nothing destroyed: the same instances, the device still typed.
        self.assertEqual(before, self.gpu(changed).mig)
        self.assertEqual('1414\n', self.vf_file(device.device_id,
                                                vfio.CURRENT))

    def test_layout_changed_on_an_idle_gpu_is_carved(self):
        self.al.carve_mig_layouts(self.device_config())
        changed = self.build(self.CHANGED)
        result = changed.carve_mig_layouts(self.device_config())
        self.assertEqual([mig_layout.CARVE], [g.action for g in result.gpus])
        self.assertEqual({'1g.18gb': 4, '3g.71gb': 1},
                         self.gpu(changed).mig.layout())
        self.assertEqual({GPU: '1g.18gb: 4, 3g.71gb: 1'},
                         changed.ledger.mig_layouts())

    def test_layout_without_the_type_s_own_profile_is_refused(self):
        # nvidia-1414 (H200X-1-18C) runs on 1g.18gb instances: two 3g.71gb
        # would be carved and serve nothing.
        self.al.carve_mig_layouts(self.device_config())
        before = self.gpu().mig
        changed = self.build('3g.71gb:2')
        result = changed.carve_mig_layouts(self.device_config())
        self.assertEqual([], list(result.gpus))
        (problem,) = result.problems
        self.assertEqual(('mig.layout_without_type_profile', findings.ERROR),
                         (problem.code, problem.severity))
        for fragment in ('nvidia-1414', '1g.18gb', GPU):
            self.assertIn(fragment, problem.why)
        self.assertIn('1g.18gb:<count>', problem.fix)
        self.assertEqual(before, self.gpu(changed).mig)

    def test_host_back_without_instances_gets_the_layout_its_guests_need(self):
        """A reboot, and a new layout declared meanwhile.

        The ledger gives a device on the GPU to an instance: its layout is
        carved again (not the new one), and the device comes back on it.
        """
        self.al.carve_mig_layouts(self.device_config())
        self.al.targets = lifecycle.targets_of(self.al, self.device_config())
        (device,) = self.al.claim('inst', lifecycle.alloc(
            self.al, 'pci_0000_19_00_0')).devices
        # The host reboots: the VF untyped, no GPU instance, MIG mode off.
        self.al.backend.remove_device(device.device_id)
        self.al.backend.mig_command(GPU, 'mig_mode', '0')
        self.assertEqual(mig.MigState(enabled=False), self.gpu().mig)
        after = self.build(self.CHANGED)
        result = after.carve_mig_layouts(self.device_config())
        (gpu_plan,) = result.gpus
        self.assertEqual((mig_layout.CARVE, '1g.18gb: 7'),
                         (gpu_plan.action, gpu_plan.words))
        (problem,) = result.problems
        self.assertEqual('mig.layout_in_use', problem.code)
        self.assertIn(device.device_id, problem.why)
        self.assertEqual({'1g.18gb': 7}, self.gpu(after).mig.layout())
        after.targets = lifecycle.targets_of(after, self.device_config())
        actions = after.reconcile(live_consumers={'inst'})
        self.assertEqual([('recreate', device.device_id)],
                         [(a.kind, a.device_id) for a in actions])
        self.assertEqual('1414\n', self.vf_file(device.device_id,
                                                vfio.CURRENT))


class TestOneLayoutPerGpu(MigTestCase):
    """The same GPU under two MIG-backed types: a configuration error."""

    def config(self, layout):
        # The second address as nvidia-smi's short form of the same GPU.
        return ('[devices]\nenabled_mdev_types = nvidia-1414, nvidia-2613\n'
                '[mdev_nvidia-1414]\ndevice_addresses = %s\n'
                'mig_gpu_instances = %s\n'
                '[mdev_nvidia-2613]\ndevice_addresses = 19:00.0\n'
                'mig_gpu_instances = 3g.71gb:2\n' % (GPU, layout))

    def test_refused_and_nothing_carved(self):
        result = self.al.carve_mig_layouts(self.device_config())
        self.assertEqual([], list(result.gpus))
        (problem,) = [p for p in result.problems
                      if p.code == 'mig.two_layouts']
        self.assertEqual(findings.ERROR, problem.severity)
        for fragment in (GPU, 'nvidia-1414', 'nvidia-2613'):
            self.assertIn(fragment, problem.why)
        self.assertEqual(mig.MigState(enabled=False), self.gpu().mig)


class TestHandCarved(base.TestCase):
    """A GPU carved before this project: used as it is."""

    def test_capacity_from_the_instances_there(self):
        al = lifecycle.build(self.root, 'a100-mig-vfio', config=(
            '[devices]\nenabled_mdev_types = nvidia-2303\n'))
        self.addCleanup(al.ledger.close)
        plan = mapping.assign(configs.device_config(
            [os.path.join(self.root, 'nova.conf')]), al.scan())
        # Only the hand-carved GPU offers the MIG-backed type.
        self.assertEqual([('0000:61:00.0', 2)],
                         [(a.gpu.address, a.capacity) for a in plan.gpus])


class TestSeveralProfiles(MigTestCase):
    """One type per GPU: instances of other profiles stay unused, said."""

    layout = '1g.18gb:3, 3g.71gb:1'

    def test_served_from_its_own_profile_only(self):
        self.al.carve_mig_layouts(self.device_config())
        self.assertEqual({'1g.18gb': 3, '3g.71gb': 1},
                         self.gpu().mig.layout())
        plan = mapping.assign(self.device_config(), self.al.scan())
        self.assertEqual([3], [a.capacity for a in plan.gpus])
        (problem,) = [p for p in plan.problems
                      if p.code == 'mig.other_profiles']
        self.assertEqual('3g.71gb: 1', problem.value)
        self.assertIn('stay unused', problem.why)


class TestDefaultType(base.TestCase):
    """A MIG-backed default type: every MIG-capable GPU no type lists."""

    def test_the_gpu_another_type_lists_is_not_carved(self):
        al = lifecycle.build(self.root, 'h200-vfio', config=(
            '[devices]\nenabled_mdev_types = nvidia-1414, nvidia-2603\n'
            '[mdev_nvidia-1414]\nmig_gpu_instances = 1g.18gb:7\n'
            # Written as operators do, without the PCI domain.
            '[mdev_nvidia-2603]\ndevice_addresses = 3B:00.0\n'))
        self.addCleanup(al.ledger.close)
        config = configs.device_config(
            [os.path.join(self.root, 'nova.conf')])
        result = al.carve_mig_layouts(config)
        self.assertEqual([(GPU, mig_layout.CARVE)],
                         [(g.gpu, g.action) for g in result.gpus])
        modes = {g.address: g.mig.enabled for g in al.backend.scan().gpus}
        self.assertEqual({GPU: True, '0000:3b:00.0': False}, modes)
        plan = mapping.assign(config, al.scan())
        self.assertEqual({GPU: ('nvidia-1414', 7),
                          '0000:3b:00.0': ('nvidia-2603', 16)},
                         {a.gpu.address: (a.type_id, a.capacity)
                          for a in plan.gpus})


class TestCommands(test_cli.CLITestCase):
    """reconcile carves (or says it would); inventory and check show it."""

    def test_reconcile_carves_what_nova_conf_declares(self):
        common = self.mig_host('h200-vfio', 'nvidia-1414', GPU,
                               '1g.18gb:7')
        code, out, err = self.run_cli(*common, 'reconcile', '--dry-run')
        self.assertEqual(0, code, err)
        self.assertIn('would carve          %s: GPU instances 1g.18gb: 7'
                      % GPU, out)
        code, out, err = self.run_cli(*common, 'reconcile')
        self.assertEqual(0, code, err)
        self.assertIn('did   carve          %s' % GPU, out)
        code, out, err = self.run_cli(*common, 'reconcile')
        self.assertNotIn('carve', out)      # carved already
        code, out, err = self.run_cli(*common, 'inventory')
        self.assertEqual(0, code, err)
        self.assertIn('MIG GPU instances: %s 1g.18gb: 7' % GPU, out)
        self.assertIn('NVIDIA H200X-1-18C', out)
        self.assertNoTraceback(out, err)
