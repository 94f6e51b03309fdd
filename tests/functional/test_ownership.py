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
"""The audit of ownership: each disagreement planted, each one named."""

import json
import os
import uuid

from prometheus_client import parser as prom_parser

from tests.functional import base
from tests.unit import test_cli
from vgpu_nova_ext import conf as conf_pkg
from vgpu_nova_ext.devices import allocator as allocator_mod
from vgpu_nova_ext.devices import factory
from vgpu_nova_ext import findings
from vgpu_nova_ext.host import model
from vgpu_nova_ext.host import simulated
from vgpu_nova_ext.host.simulated import manager
from vgpu_nova_ext import inventory
from vgpu_nova_ext.placement import ownership

HOST = base.HOST


def u(name: str) -> str:
    """A consumer's UUID (Placement takes nothing else), named for reading."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, name))


GPU84, GPU85 = 'pci_0000_84_00_0', 'pci_0000_85_00_0'


class TestOwnership(base.TestCase, test_cli.CLITestCase):

    def setUp(self):
        super().setUp()
        self.state = os.path.join(self.tmp, 'state')
        self.conf = os.path.join(self.tmp, 'nova.conf')
        with open(self.conf, 'w') as f:
            f.write('[devices]\nenabled_mdev_types = nvidia-18, nvidia-22\n'
                    '[mdev_nvidia-18]\ndevice_addresses = 0000:84:00.0\n'
                    '[mdev_nvidia-22]\ndevice_addresses = 0000:85:00.0\n'
                    '[placement]\nauth_type = admin_token\n'
                    'endpoint = %s\ntoken = admin\n'
                    % self.placement.endpoint)
        os.chmod(self.conf, 0o600)
        self.compute_node()
        plan = self.assignment('m60', open(self.conf).read())
        self.publisher().sync(plan)
        # The host and ledger the command reads (--state-path keeps the
        # simulated host beside the ledger).
        self.devices = factory.open_host(
            conf_pkg.CONF, HOST, state_path=self.state,
            targets=allocator_mod.targets(HOST, plan),
            keep_simulated_host=True,
            profile=simulated.load_profile('m60'))
        self.addCleanup(self.devices.close)
        self.al = self.devices.allocator
        self.rp = {t.gpu: t.provider_uuid for t in self.al.targets.values()}

    def claim(self, consumer, gpu):
        (device,) = self.al.claim(consumer, {
            self.rp[gpu]: {'resources': {'VGPU': 1}}}).devices
        return device.device_id

    def audit(self, *extra):
        return self.run_cli('--simulate', 'm60', '--host', HOST,
                            '--state-path', self.state, '--config-file',
                            self.conf, 'audit', '--ownership', *extra)

    def test_agreement_exit_0(self):
        self.claim(u('inst-ok'), GPU84)
        self.allocate(u('inst-ok'), {self.rp[GPU84]: {'VGPU': 1}})
        code, out, err = self.audit('--format', 'json')
        self.assertEqual(0, code, err)
        found = json.loads(out)
        self.assertEqual([], found['findings'])
        self.assertEqual([{'consumer': u('inst-ok'), 'amount': 1,
                           'gpu': GPU84, 'provider': inventory.provider_name(
                               HOST, GPU84)}], found['allocations'])
        self.assertGreater(found['placement_reads'], 0)

    def test_each_disagreement_named(self):
        self.claim(u('inst-ok'), GPU84)
        self.allocate(u('inst-ok'), {self.rp[GPU84]: {'VGPU': 1}})
        self.allocate(u('inst-nodev'), {self.rp[GPU84]: {'VGPU': 1}})
        stray = self.claim(u('inst-noalloc'), GPU85)
        moved = self.claim(u('inst-moved'), GPU84)
        self.allocate(u('inst-moved'), {self.rp[GPU85]: {'VGPU': 1}})
        lost = self.claim(u('inst-lost'), GPU84)
        self.allocate(u('inst-lost'), {self.rp[GPU84]: {'VGPU': 1}})
        self.al.backend.remove_device(lost)     # behind the ledger's back
        code, out, err = self.audit('--format', 'json')
        self.assertEqual(1, code, err)
        found = {(f['code'], f['where']): f
                 for f in json.loads(out)['findings']}
        for f in found.values():
            # The keys before one finding type, kept for scripts until 3.0.
            self.assertEqual((f['code'], f['where'], f['why']), (
                'owner.' + f['kind'], f['subject'], f['detail']))
        self.assertEqual({
            (findings.OWNER_ALLOCATION_WITHOUT_DEVICE, u('inst-nodev')),
            (findings.OWNER_DEVICE_WITHOUT_ALLOCATION, stray),
            (findings.OWNER_DEVICE_ON_OTHER_GPU, u('inst-moved')),
            (findings.OWNER_DEVICE_MISSING, lost)}, set(found))
        self.assertIn(moved, found[(findings.OWNER_DEVICE_ON_OTHER_GPU,
                                    u('inst-moved'))]['why'])
        self.assertIn('reboot --hard', found[(
            findings.OWNER_ALLOCATION_WITHOUT_DEVICE, u('inst-nodev'))]['fix'])
        self.assertIn('orphan_grace_period', found[(
            findings.OWNER_DEVICE_WITHOUT_ALLOCATION, stray)]['fix'])
        # The table names them too, and says the guests were not read
        # (no libvirt-python here).
        code, out, _ = self.audit()
        self.assertEqual(1, code)
        self.assertIn('4 finding(s)', out)
        self.assertIn('guests\' domains not read', out)
        self.assertNoTraceback(out)

    def test_stale_vgpu_of_nvidias_manager(self):
        # A guest running on its device: the manager's vGPU is accounted
        # for. One the manager still holds on the other GPU, whose mdev is
        # gone (nvidia-smi vgpu would list it): a finding, and a metric.
        used = self.claim(u('inst-ok'), GPU84)
        self.allocate(u('inst-ok'), {self.rp[GPU84]: {'VGPU': 1}})
        root = self.al.backend.root
        with open(os.path.join(root, 'sys/bus/mdev/devices', used,
                               simulated.IN_USE_MARK), 'w') as f:
            f.write(u('inst-ok'))
        gone = str(uuid.uuid4())
        manager.hold(root, '0000:85:00.0', model.ManagerVgpu(
            'stale-vgpu', gone, 'nvidia-22', u('inst-gone')))
        code, out, err = self.audit('--format', 'json')
        self.assertEqual(1, code, err)
        (found,) = json.loads(out)['findings']
        self.assertEqual((findings.OWNER_MANAGER_VGPU_UNKNOWN, 'stale-vgpu',
                          '0000:85:00.0'),
                         (found['code'], found['where'], found['value']))
        self.assertIn(gone, found['why'])
        self.assertIn(u('inst-gone'), found['why'])
        code, out, err = self.run_cli(
            '--simulate', 'm60', '--host', HOST, '--state-path', self.state,
            '--config-file', self.conf, 'metrics')
        self.assertEqual(0, code, err)
        samples = [sample for family in
                   prom_parser.text_string_to_metric_families(out)
                   for sample in family.samples]
        self.assertEqual({'0000:84:00.0': 0, '0000:85:00.0': 1}, {
            s.labels['gpu']: s.value for s in samples
            if s.name == 'vgpu_nova_ext_manager_vgpus_stale'})
        self.assertEqual({(u('inst-ok'), used, 'false'),
                          (u('inst-gone'), gone, 'true')}, {
            (s.labels['vm'], s.labels['device'], s.labels['stale'])
            for s in samples
            if s.name == 'vgpu_nova_ext_manager_vgpu_info'})
        code, out, err = self.run_cli(
            '--simulate', 'm60', '--host', HOST, '--state-path', self.state,
            '--config-file', self.conf, 'devices')
        self.assertEqual(0, code, err)
        self.assertIn('NVIDIA\'s vGPU manager (NVML) runs 2 vGPU(s), 1 '
                      'stale', out)
        code, out, err = self.run_cli(
            '--simulate', 'm60', '--host', HOST, '--state-path', self.state,
            '--config-file', self.conf, 'devices', '--format', 'json')
        self.assertEqual({('stale-vgpu', True), (manager.vgpu_uuid(used),
                                                 False)},
                         {(r['vgpu'], r['stale']) for r in
                          json.loads(out)['manager_vgpus']})

    def test_guests_joined(self):
        # The guests' domains as a libvirt connection lists them (Nova's
        # fake libvirt in tests/nova); here the join itself.
        mine = self.claim(u('inst-a'), GPU84)
        other = self.claim(u('inst-b'), GPU85)
        self.allocate(u('inst-a'), {self.rp[GPU84]: {'VGPU': 1}})
        self.allocate(u('inst-b'), {self.rp[GPU85]: {'VGPU': 1}})
        allocations = ownership.read_allocations(
            self.client, HOST, {inventory.provider_name(HOST, g): g
                                for g in (GPU84, GPU85)})
        unknown = '0b1c3f4e-7a56-4d41-9a3e-2f0a1b2c3d4e'
        found = ownership.join(
            allocations, self.al.ledger.all(), self.al.ledger.links(),
            self.al.backend.scan(),
            {u('inst-a'): [mine, other], u('inst-b'): [other, unknown]})
        self.assertEqual([
            (findings.OWNER_GUEST_DEVICE_NOT_ITS_OWN, u('inst-a')),
            (findings.OWNER_GUEST_DEVICE_UNKNOWN, u('inst-b'))],
            [(f.code, f.where) for f in found])
        self.assertIn(other, found[0].why)
        self.assertIn(u('inst-b'), found[0].why)
