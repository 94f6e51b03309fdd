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
"""The driver through Nova's API, with Nova's own functional harness.

Nova's ServersTestBase starts the API, conductor, scheduler, a real
Placement (in process) and compute services on fake libvirt; the compute
driver is vgpu-nova-ext's, loaded through its nova.virt shim, with the
simulated host backend behind it.
"""

import base64
import glob
from importlib import resources
import json
import os
import shutil
import subprocess
import sys
import time

import fixtures
from lxml import etree as lxml_etree
import nova.conf as nova_conf
from nova.conf import devices as nova_devices
from nova import context
from nova import monkey_patch
from nova import objects
from nova.tests import fixtures as nova_fixtures
from nova.tests.functional.api import client
from nova.tests.functional.libvirt import base
from nova.virt.libvirt import driver as libvirt_driver
from nova.virt.libvirt import host as libvirt_host
import os_resource_classes as orc
from oslo_utils import uuidutils
import yaml

from tests.nova import fake_libvirt
from tests import timeout
from tests.unit import schemas
from tests.unit import test_vfio_profiles
from vgpu_nova_ext.conf import devices as devices_conf
from vgpu_nova_ext.devices import guest as guest_mod
from vgpu_nova_ext.devices import ledger as ledger_mod
from vgpu_nova_ext import exception
from vgpu_nova_ext import findings
from vgpu_nova_ext.host import simulated
from vgpu_nova_ext.host.simulated import manager as simulated_manager
from vgpu_nova_ext.host.simulated import vgpu_scheduler_state as \
    simulated_scheduler
from vgpu_nova_ext import inventory
from vgpu_nova_ext.nova import compat
from vgpu_nova_ext.nova import driver as vgpu_driver
from vgpu_nova_ext.nova import hooks as vgpu_hooks
from vgpu_nova_ext.placement import client as placement_client
from vgpu_nova_ext.placement import ownership
from vgpu_nova_ext.placement import publish

IMAGE = '155d900f-4e14-4e4c-a73d-069cbf4541e6'
TOKEN = b'eyJhbGciOiJSUzI1NiJ9.dGVzdC10b2tlbi12Z3B1.c2ln'


class DriverTestBase(base.ServersTestBase):

    microversion = 'latest'
    ADMIN_API = True
    profile = 'm60'
    enabled_types = 'nvidia-18'

    def setUp(self):
        # First, so that it also bounds Nova's own set-up and clean-up.
        self.useFixture(timeout.HardTimeout())
        self.state = self.useFixture(fixtures.TempDir()).path
        if not monkey_patch.is_patched():
            # Native threads. Nova 33's notification fixture finds the test
            # a notification comes from through eventlet's current green
            # thread, which native threads do not have; Nova 34's skips
            # that in threading mode. Same here: every notification is this
            # test's.
            self.useFixture(fixtures.MonkeyPatch(
                'nova.tests.fixtures.notifications.FakeVersionedNotifier.'
                '_get_sender_test_case_id', staticmethod(self.id)))
        super().setUp()
        self.flags(host_backend='simulated', simulated_profile=self.profile,
                   state_path=self.state, group='vgpu_nova_ext')
        self.flags(enabled_mdev_types=self.enabled_types, group='devices')

    def _setup_services(self):
        # The nova wheel installs api-paste.ini under the environment's
        # prefix, not beside the source tree where Nova's tests look.
        self.flags(api_paste_config=os.path.join(
            sys.prefix, 'etc', 'nova', 'api-paste.ini'), group='wsgi')
        super()._setup_services()

    def _setup_compute_service(self):
        self.flags(compute_driver='vgpu_nova_ext_driver.LibvirtVGPUDriver')

    def device_addresses(self, type_id, *addresses):
        """``[mdev_<type_id>] device_addresses``, as nova.conf sets it."""
        nova_devices.register_dynamic_opts(nova_conf.CONF)
        self.flags(device_addresses=list(addresses), group='mdev_' + type_id)

    def allow_moves(self):
        """Resizes and migrations on fake libvirt, one host included."""
        # As in Nova's own vGPU tests: the fake instances have no disks to
        # move.
        self.useFixture(fixtures.MockPatch(
            'nova.virt.libvirt.LibvirtDriver._get_instance_disk_info',
            return_value=[]))
        self.useFixture(fixtures.MockPatch('os.rename'))
        self.flags(allow_resize_to_same_host=True)

    def allow_rescue(self):
        """Rescue on fake libvirt."""
        # As Nova's own rescue tests: the fake instances have no directory
        # for rescue's unrescue.xml, nor a rescue disk to touch.
        self.useFixture(fixtures.MockPatch(
            'nova.virt.libvirt.imagebackend._update_utime_ignore_eacces'))
        self.useFixture(fixtures.MonkeyPatch(
            'nova.virt.libvirt.utils.get_instance_path',
            lambda *a, **k: nova_conf.CONF.instances_path))

    def start_vgpu_compute(self, hostname='host1'):
        self.start_compute(hostname=hostname)
        return self.computes[hostname]

    def host_devices(self, compute):
        return compute.driver._vgpu_ext().backend.scan().mediated_devices

    def small_vgpu_flavor(self, memory_mb=256):
        return self._create_flavor(
            memory_mb=memory_mb, vcpu=1, disk=1, ephemeral=0,
            extra_spec={'resources:VGPU': '1'})

    def guest_xml(self, compute, server) -> str:
        return compute.driver._host.get_guest(objects.Instance.get_by_uuid(
            context.get_admin_context(), server['id'])).get_xml_desc()

    def guest_devices(self, compute, server) -> list[str]:
        """The vGPU devices in the server's domain XML on ``compute``."""
        return guest_mod.devices_in_domain(self.guest_xml(compute, server))

    def provider_usage(self, name):
        rp = self._get_provider_uuid_by_name(name)
        return self._get_provider_usages(rp).get(orc.VGPU, 0)

    def assertRefusedBeforeAnyDevice(self, groups: dict, *fragments):
        """Two vGPUs in one guest that the vendor refuses.

        The build ends in ERROR with the rule as its fault (no reschedule),
        and nothing is made or claimed on the host.
        """
        before = {d.device_id for d in self.host_devices(self.compute)}
        flavor = self._create_flavor(extra_spec=dict(
            groups, **{'resources1:VGPU': '1', 'resources2:VGPU': '1',
                       'group_policy': 'isolate'}))
        server = self._create_server(image_uuid=IMAGE, flavor_id=flavor,
                                     networks='none',
                                     expected_state='ERROR')
        for fragment in fragments:
            self.assertIn(fragment, server['fault']['message'])
        self.assertEqual(before, {d.device_id for d in
                                  self.host_devices(self.compute)})
        self.assertEqual([], [e for e in self.compute.driver._vgpu_ext()
                              .ledger.all() if e.consumer])


class TestBoot(DriverTestBase):

    def setUp(self):
        super().setUp()
        self.compute = self.start_vgpu_compute('host1')
        self.flavor = self._create_flavor(extra_spec={'resources:VGPU': '1'})

    def test_gpu_providers_reported(self):
        for gpu in ('pci_0000_84_00_0', 'pci_0000_85_00_0'):
            name = 'host1_' + gpu
            rp = self._get_provider_uuid_by_name(name)
            self.assertEqual(inventory.provider_uuid(name), rp)
            inv = self._get_provider_inventory(rp)
            self.assertEqual(4, inv[orc.VGPU]['total'])
            self.assertEqual(1, inv[orc.VGPU]['max_unit'])
            self.assertIn('CUSTOM_VGPU_M60_2Q', self._get_provider_traits(rp))

    def test_boot_and_delete(self):
        server = self._create_server(
            image_uuid=IMAGE, flavor_id=self.flavor, networks='none',
            host='host1', expected_state='ACTIVE')
        allocations = self._get_allocations_by_server_uuid(server['id'])
        gpu_rps = [rp for rp, a in allocations.items()
                   if orc.VGPU in a['resources']]
        self.assertEqual(1, len(gpu_rps))
        # The device was made on the GPU the allocation is on.
        (device,) = self.host_devices(self.compute)
        gpus = {inventory.provider_uuid('host1_' + g): g
                for g in ('pci_0000_84_00_0', 'pci_0000_85_00_0')}
        self.assertEqual(gpus[gpu_rps[0]], device.parent)
        # Its UUID is in the guest's XML, in the extension's hostdev.
        xml = self.guest_xml(self.compute, server)
        self.assertEqual([device.device_id],
                         guest_mod.devices_in_domain(xml))
        schemas.assert_valid(self, 'domain.rng', xml)
        self._delete_server(server)
        self.assertEqual((), self.host_devices(self.compute))
        self.assertEqual([], self.compute.driver._vgpu_ext().ledger.all())


class TestLicensing(DriverTestBase):
    """The licensing files on the config drive Nova really builds.

    Nova's own _create_configdrive runs (InstanceMetadata, its
    ConfigDriveBuilder, genisoimage from Debian's genisoimage package); the
    ISO is read back with isoinfo, as a guest's cloud-init would see it.
    """

    def setUp(self):
        # Nova's fake image backend (set up by Nova's base class) says every
        # disk exists, so Nova would never build the config drive.
        init = nova_fixtures.LibvirtImageBackendFixture.__init__

        def no_config_drive_yet(fixture, *args, **kwargs):
            kwargs.setdefault('exists', lambda name: name != 'disk.config')
            init(fixture, *args, **kwargs)

        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.LibvirtImageBackendFixture.__init__',
            no_config_drive_yet))
        super().setUp()
        for tool in ('genisoimage', 'isoinfo'):
            if shutil.which(tool) is None:
                message = '%s missing: apt-get install genisoimage' % tool
                if os.environ.get('VGPU_NOVA_EXT_REQUIRE_SCHEMAS'):
                    self.fail(message)
                self.skipTest(message)
        token = os.path.join(self.state, 'client.tok')
        with open(token, 'wb') as f:
            f.write(TOKEN)
        os.chmod(token, 0o600)
        self.flags(enabled=True, client_config_token_file=token,
                   group='vgpu_licensing')
        # The fake instances have no directory for disk.config.
        instances = self.useFixture(fixtures.TempDir()).path

        def instance_path(instance, *args, **kwargs):
            path = os.path.join(instances, instance.uuid)
            os.makedirs(path, exist_ok=True)
            return path

        self.useFixture(fixtures.MonkeyPatch(
            'nova.virt.libvirt.utils.get_instance_path', instance_path))
        self.instances = instances
        self.compute = self.start_vgpu_compute('host1')
        self.vgpu = self._create_flavor(extra_spec={'resources:VGPU': '1'})
        self.plain = self._create_flavor(name='plain')

    def config_drive(self, flavor, metadata=None):
        """{path in the guest: content} of the server's config drive."""
        body = self._build_server(image_uuid=IMAGE, flavor_id=flavor,
                                  networks='none')
        body['config_drive'] = True
        if metadata:
            body['metadata'] = metadata
        server = self._wait_for_state_change(
            self.api.post_server({'server': body}), 'ACTIVE')
        iso = os.path.join(self.instances, server['id'], 'disk.config')

        def read(path):
            return subprocess.run(['isoinfo', '-R', '-i', iso, '-x', path],
                                  check=True, capture_output=True).stdout

        meta = json.loads(read('/openstack/latest/meta_data.json'))
        return {f['path']: read('/openstack' + f['content_path'])
                for f in meta.get('files', [])}

    def test_config_drive_of_a_vgpu_server_carries_the_files(self):
        files = self.config_drive(self.vgpu)
        self.assertEqual(
            {'/etc/nvidia/gridd.conf',
             '/etc/nvidia/ClientConfigToken/client_configuration_token.tok'},
            set(files))
        self.assertEqual(TOKEN, files[
            '/etc/nvidia/ClientConfigToken/client_configuration_token.tok'])
        self.assertIn(b'FeatureType=1', files['/etc/nvidia/gridd.conf'])
        # Nova logs the InjectionInfo it builds the drive from: the
        # contents stay hidden.
        self.assertNotIn(TOKEN.decode(), self.stdlog.logger.output)

    def test_server_without_vgpu_gets_none(self):
        self.assertEqual({}, self.config_drive(self.plain))

    def test_gpu_operator_worker_gets_the_secret_manifest(self):
        # The tenant's server metadata (openstack server create --property)
        # asks for NVIDIA's GPU Operator licensing Secret.
        files = self.config_drive(
            self.vgpu, metadata={'vgpu_nova_ext:gpu_operator': 'gpu-ops'})
        secret = yaml.safe_load(
            files['/etc/nvidia/gpu-operator/licensing-config.yaml'])
        self.assertEqual(('Secret', 'licensing-config', 'gpu-ops'), (
            secret['kind'], secret['metadata']['name'],
            secret['metadata']['namespace']))
        self.assertEqual(
            {'gridd.conf': files['/etc/nvidia/gridd.conf'],
             'client_configuration_token.tok': TOKEN},
            {k: base64.b64decode(v) for k, v in secret['data'].items()})
        self.assertNotIn(base64.b64encode(TOKEN).decode(),
                         self.stdlog.logger.output)
        # The same metadata on a server without a vGPU: nothing.
        self.assertEqual({}, self.config_drive(
            self.plain, metadata={'vgpu_nova_ext:gpu_operator': 'true'}))


class TestDisplay(DriverTestBase):
    """vgpu_nova_ext:display: Nova's API validates it, the driver uses it."""

    def setUp(self):
        super().setUp()
        # The XML Nova defines each guest with, as libvirt receives it
        # (Nova's fake libvirt keeps only the parts it models).
        self.defined = {}
        write = libvirt_host.Host.write_instance_config

        def recorded(host, xml):
            root = lxml_etree.fromstring(xml.encode())
            self.defined[root.findtext('uuid')] = xml
            return write(host, xml)
        self.useFixture(fixtures.MonkeyPatch(
            'nova.virt.libvirt.host.Host.write_instance_config', recorded))
        self.compute = self.start_vgpu_compute('host1')

    def flavor(self, display):
        return self._create_flavor(extra_spec={
            'resources:VGPU': '1', 'vgpu_nova_ext:display': display})

    def hostdev(self, server):
        xml = self.defined.pop(server['id'])
        schemas.assert_valid(self, 'domain.rng', xml)
        (element,) = lxml_etree.fromstring(xml.encode()).iter('hostdev')
        return element

    def test_nova_api_refuses_what_is_wrong(self):
        # Nova's own validation of flavor extra specs, with this project's
        # validators (its nova.api.extra_spec_validators entry point).
        flavor = self._create_flavor(extra_spec={'resources:VGPU': '1'})
        for key, value, said in (
                ('vgpu_nova_ext:display', 'bogus', 'off, on, ramfb'),
                ('vgpu_nova_ext:dispaly', 'on', 'vgpu_nova_ext:dispaly')):
            exc = self.assertRaises(
                client.OpenStackApiException, self.api.post_extra_spec,
                flavor, {'extra_specs': {key: value}})
            self.assertEqual(400, exc.response.status_code)
            self.assertIn(said, exc.response.text)
        self.api.post_extra_spec(flavor, {'extra_specs': {
            'vgpu_nova_ext:display': 'ramfb'}})

    def test_off_by_default(self):
        server = self._create_server(
            image_uuid=IMAGE, flavor_id=self._create_flavor(
                extra_spec={'resources:VGPU': '1'}), networks='none',
            expected_state='ACTIVE')
        element = self.hostdev(server)
        self.assertEqual(('off', None), (element.get('display'),
                                         element.get('ramfb')))

    def test_on_and_ramfb(self):
        for display, ramfb in (('on', None), ('ramfb', 'on')):
            server = self._create_server(
                image_uuid=IMAGE, flavor_id=self.flavor(display),
                networks='none', expected_state='ACTIVE')
            element = self.hostdev(server)
            self.assertEqual(('on', ramfb), (element.get('display'),
                                             element.get('ramfb')))
            # A hard reboot builds the guest again: the display stays.
            self._reboot_server(server, hard=True)
            self.assertEqual('on', self.hostdev(server).get('display'))
            self._delete_server(server)


class TestDisplayOnVf(DriverTestBase):
    """A VF of NVIDIA's vendor VFIO has no display: the build is refused."""

    profile = 'l40s-vfio'
    enabled_types = 'nvidia-1150'

    def test_refused_with_the_reason(self):
        self.start_vgpu_compute('host1')
        flavor = self._create_flavor(extra_spec={
            'resources:VGPU': '1', 'vgpu_nova_ext:display': 'on'})
        server = self._create_server(
            image_uuid=IMAGE, flavor_id=flavor, networks='none',
            expected_state='ERROR')
        fault = self.api.get_server(server['id'])['fault']['message']
        self.assertIn('vgpu_nova_ext:display', fault)
        self.assertIn('vendor-specific VFIO', fault)
        self._delete_server(server)
        # Its device is freed with it.
        self.assertEqual({}, {e.device_id: e.consumer for e in
                              self.computes['host1'].driver._vgpu_ext()
                              .ledger.all() if e.consumer is not None})


class TestVgpuParams(DriverTestBase):
    """vgpu_nova_ext:vgpu_params:*, through Nova's API and its moves."""

    profile = 'v100x8'
    enabled_types = 'nvidia-197'      # GRID V100DX-8Q (Volta, Q series)
    PARAMS = 'vgpu_nova_ext:vgpu_params:'

    def setUp(self):
        super().setUp()
        self.mdevctl = os.path.join(self.state, 'mdevctl.d')
        self.flags(mdevctl_path=self.mdevctl, group='vgpu_nova_ext')
        self.compute = self.start_vgpu_compute('host1')

    def flavor(self, memory_mb=256, **params):
        return self._create_flavor(memory_mb=memory_mb, extra_spec=dict(
            {'resources:VGPU': '1'},
            **{self.PARAMS + k: v for k, v in params.items()}))

    def params(self, server):
        """What the server's device holds, as NVIDIA's driver reads it."""
        (device,) = self.guest_devices(self.compute, server)
        with open(os.path.join(self.compute.driver._vgpu_ext().backend.root,
                               'sys', 'bus', 'mdev', 'devices', device,
                               'nvidia', 'vgpu_params')) as f:
            return f.read().strip()

    def test_nova_api_refuses_what_is_wrong(self):
        flavor = self._create_flavor(extra_spec={'resources:VGPU': '1'})
        for key, value, said in (
                (self.PARAMS + 'enable_uvm', 'yes', '0'),
                (self.PARAMS + 'enable_uvn', '1', self.PARAMS + 'enable_uvn'),
        ):
            exc = self.assertRaises(
                client.OpenStackApiException, self.api.post_extra_spec,
                flavor, {'extra_specs': {key: value}})
            self.assertEqual(400, exc.response.status_code)
            self.assertIn(said, exc.response.text)
        self.api.post_extra_spec(flavor, {'extra_specs': {
            self.PARAMS + 'frame_rate_limiter': '0'}})

    def test_written_kept_and_changed_by_a_resize(self):
        self.allow_moves()
        server = self._create_server(
            image_uuid=IMAGE, flavor_id=self.flavor(enable_uvm='1',
                                                    enable_profiling='1'),
            networks='none', expected_state='ACTIVE')
        self.assertEqual('enable_profiling=1,enable_uvm=1',
                         self.params(server))
        # mdevctl's definition carries them, for a device it makes at boot.
        (device,) = self.guest_devices(self.compute, server)
        (definition,) = glob.glob(os.path.join(self.mdevctl, '*', device))
        with open(definition) as f:
            self.assertEqual([{'nvidia/vgpu_params':
                               'enable_profiling=1,enable_uvm=1'}],
                             json.load(f)['attrs'])
        # Lost (a device made again bare): a hard reboot writes them again.
        (device,) = self.guest_devices(self.compute, server)
        self.compute.driver._vgpu_ext().backend.set_vgpu_params(
            'mdev', device, ())
        self.assertEqual('', self.params(server))
        self._reboot_server(server, hard=True)
        self.assertEqual('enable_profiling=1,enable_uvm=1',
                         self.params(server))
        # A resize to a flavor with other parameters: the new device gets
        # those, and nothing of the old ones.
        self._resize_server(server, self.flavor(memory_mb=512,
                                                frame_rate_limiter='0'))
        self.assertEqual('frame_rate_limiter=0', self.params(server))
        self._revert_resize(server)
        self.assertEqual('enable_profiling=1,enable_uvm=1',
                         self.params(server))
        # A flavor without any: none.
        self._resize_server(server, self.flavor(memory_mb=512))
        self.assertEqual('', self.params(server))

    def test_a_refused_mdevctl_definition_does_not_stop_the_guest(self):
        server = self._create_server(
            image_uuid=IMAGE, flavor_id=self.flavor(enable_uvm='1'),
            networks='none', expected_state='ACTIVE')
        (device,) = self.guest_devices(self.compute, server)
        self.compute.driver._vgpu_ext().backend.set_vgpu_params(
            'mdev', device, ())
        # The parent's definitions directory swapped for a link: the
        # definition is refused (never written through a link).
        (parent,) = os.listdir(self.mdevctl)
        moved = os.path.join(self.state, 'elsewhere')
        os.rename(os.path.join(self.mdevctl, parent), moved)
        os.symlink(moved, os.path.join(self.mdevctl, parent))
        self._reboot_server(server, hard=True)
        self.assertEqual('enable_uvm=1', self.params(server))

    def test_a_write_refused_while_the_guest_runs(self):
        server = self._create_server(
            image_uuid=IMAGE, flavor_id=self.flavor(enable_uvm='1'),
            networks='none', expected_state='ACTIVE')
        (device,) = self.guest_devices(self.compute, server)
        ext = self.compute.driver._vgpu_ext()
        with open(os.path.join(ext.backend.root, 'sys', 'bus', 'mdev',
                               'devices', device, simulated.IN_USE_MARK),
                  'w') as f:
            f.write(server['id'])
        exc = self.assertRaises(exception.DeviceError,
                                ext.backend.set_vgpu_params, 'mdev', device,
                                (('enable_uvm', '0'),))
        self.assertIn(device, str(exc))
        self.assertEqual('enable_uvm=1', self.params(server))

    def test_a_rescue_beside_the_running_guest(self):
        # Nova builds the rescue guest while the guest still runs: its
        # device cannot take a write then, and the rescue goes on.
        self.allow_rescue()
        server = self._create_server(
            image_uuid=IMAGE, flavor_id=self.flavor(enable_uvm='1'),
            networks='none', expected_state='ACTIVE')
        (device,) = self.guest_devices(self.compute, server)
        ext = self.compute.driver._vgpu_ext()
        ext.backend.set_vgpu_params('mdev', device, ())
        mark = os.path.join(ext.backend.root, 'sys', 'bus', 'mdev',
                            'devices', device, simulated.IN_USE_MARK)
        with open(mark, 'w') as f:
            f.write(server['id'])
        self.api.post_server_action(server['id'], {'rescue': {}})
        self._wait_for_state_change(server, 'RESCUE')
        self.assertEqual('', self.params(server))
        os.unlink(mark)
        self.api.post_server_action(server['id'], {'unrescue': None})
        self._wait_for_state_change(server, 'ACTIVE')
        # The next start writes them.
        self._reboot_server(server, hard=True)
        self.assertEqual('enable_uvm=1', self.params(server))


class TestVgpuParamsRefused(DriverTestBase):
    """A parameter the type does not take: the build fails, with why."""

    def test_unified_memory_on_maxwell(self):
        self.compute = self.start_vgpu_compute('host1')
        server = self._create_server(
            image_uuid=IMAGE, flavor_id=self._create_flavor(extra_spec={
                'resources:VGPU': '1',
                'vgpu_nova_ext:vgpu_params:enable_uvm': '1'}),
            networks='none', expected_state='ERROR')
        fault = self.api.get_server(server['id'])['fault']['message']
        self.assertIn('enable_uvm', fault)
        self.assertIn('Maxwell', fault)
        self._delete_server(server)
        self.assertEqual({}, {e.device_id: e.consumer for e in
                              self.compute.driver._vgpu_ext().ledger.all()
                              if e.consumer is not None})


class TestVgpuParamsOnVf(DriverTestBase):
    """NVIDIA's vendor-specific VFIO: the VF's own nvidia/vgpu_params."""

    profile = 'l40s-vfio'
    enabled_types = 'nvidia-1150'

    def test_written_to_the_vf(self):
        compute = self.start_vgpu_compute('host1')
        server = self._create_server(
            image_uuid=IMAGE, flavor_id=self._create_flavor(extra_spec={
                'resources:VGPU': '1',
                'vgpu_nova_ext:vgpu_params:enable_debugging': '1'}),
            networks='none', expected_state='ACTIVE')
        (vf,) = self.guest_devices(compute, server)
        with open(os.path.join(compute.driver._vgpu_ext().backend.root,
                               'sys', 'bus', 'pci', 'devices', vf, 'nvidia',
                               'vgpu_params')) as f:
            self.assertEqual('enable_debugging=1', f.read().strip())


class TwoTypesTestBase(DriverTestBase):
    """Two types on the M60's two GPUs, a GPU each."""

    enabled_types = 'nvidia-18,nvidia-22'

    def setUp(self):
        super().setUp()
        self.device_addresses('nvidia-18', '0000:84:00.0')
        self.device_addresses('nvidia-22', '0000:85:00.0')
        self.compute = self.start_vgpu_compute('host1')


class TestScheduling(TwoTypesTestBase):
    """Flavors pick a type by trait."""

    def gpu_of(self, server):
        allocations = self._get_allocations_by_server_uuid(server['id'])
        return sorted(rp for rp, a in allocations.items()
                      if orc.VGPU in a['resources'])

    def test_trait_pins_the_type(self):
        flavor = self._create_flavor(extra_spec={
            'resources:VGPU': '1',
            'trait:CUSTOM_VGPU_M60_8Q': 'required'})
        server = self._create_server(image_uuid=IMAGE, flavor_id=flavor,
                                     networks='none',
                                     expected_state='ACTIVE')
        self.assertEqual(
            [inventory.provider_uuid('host1_pci_0000_85_00_0')],
            self.gpu_of(server))
        (device,) = self.host_devices(self.compute)
        self.assertEqual(('pci_0000_85_00_0', 'nvidia-22'),
                         (device.parent, device.type_id))

    def test_vendor_rules_refuse_a_mix_before_any_device(self):
        # One M60-2Q and one M60-8Q in one guest: on Maxwell only
        # full-framebuffer types combine (NVIDIA).
        self.assertRefusedBeforeAnyDevice(
            {}, 'only full-framebuffer types combine', 'M60-2Q')


class TestTwoVgpus(DriverTestBase):
    """Two vGPUs in one guest where NVIDIA allows it (Volta, Q series)."""

    profile = 'v100x8'
    enabled_types = 'nvidia-197'

    def test_two_vgpus_through_request_groups(self):
        self.compute = self.start_vgpu_compute('host1')
        flavor = self._create_flavor(extra_spec={
            'resources1:VGPU': '1', 'resources2:VGPU': '1',
            'group_policy': 'isolate'})
        server = self._create_server(image_uuid=IMAGE, flavor_id=flavor,
                                     networks='none',
                                     expected_state='ACTIVE')
        allocations = self._get_allocations_by_server_uuid(server['id'])
        self.assertEqual(2, len([rp for rp, a in allocations.items()
                                 if orc.VGPU in a['resources']]))
        mine = [d for d in self.host_devices(self.compute)
                if d.device_id in set(self.guest_devices(self.compute,
                                                         server))]
        self.assertEqual(2, len({d.parent for d in mine}))


class TestMostPerVm(DriverTestBase):
    """Two L40S-48Q where the host's driver (NVML) allows one per VM."""

    enabled_types = 'nvidia-1156'

    def setUp(self):
        self.profile = os.path.join(
            self.useFixture(fixtures.TempDir()).path, 'per-vm.yaml')
        with open(self.profile, 'w') as f:
            f.write(test_vfio_profiles.PER_VM_PROFILE)
        super().setUp()

    def test_refused_before_any_device(self):
        self.compute = self.start_vgpu_compute('host1')
        self.assertRefusedBeforeAnyDevice(
            {}, 'at most 1 vGPU(s) of L40S-48Q in one VM')


class TestMixedSeriesRefused(DriverTestBase):
    """An L40S-8Q and an L40S-8A in one guest: NVIDIA refuses mixed series."""

    profile = 'l40s-vfio'
    enabled_types = 'nvidia-1152,nvidia-1162'

    def setUp(self):
        super().setUp()
        self.device_addresses('nvidia-1152', '0000:26:00.0')
        self.device_addresses('nvidia-1162', '0000:c1:00.0')

    def test_refused_before_any_device(self):
        self.compute = self.start_vgpu_compute('host1')
        self.assertRefusedBeforeAnyDevice(
            {'trait1:CUSTOM_VGPU_L40S_8Q': 'required',
             'trait2:CUSTOM_VGPU_L40S_8A': 'required'},
            'one board and one series', 'L40S-8A, L40S-8Q')


class MigTestBase(DriverTestBase):
    """One MIG-backed type on one GPU, its layout declared in nova.conf."""

    LAYOUT = ''

    def setUp(self):
        super().setUp()
        self.device_addresses(self.enabled_types, self.GPU)
        devices_conf.register_type_opts(nova_conf.CONF, self.enabled_types)
        self.flags(mig_gpu_instances=self.LAYOUT,
                   group='mdev_' + self.enabled_types)

    def start_and_scan(self):
        """The compute started, and its view of the GPU."""
        self.compute = self.start_vgpu_compute('host1')
        return next(g for g in self.compute.driver._vgpu_ext().backend
                    .scan().gpus if g.address == self.GPU)


class TestMigBoot(MigTestBase):
    """A MIG-backed type declared in nova.conf, carved at start, booted."""

    profile = 'h200-vfio'
    enabled_types = 'nvidia-1414'
    GPU = '0000:19:00.0'
    LAYOUT = '1g.18gb:7'

    def test_boot_onto_a_carved_gpu_instance(self):
        gpu = self.start_and_scan()
        self.assertEqual({'1g.18gb': 7}, gpu.mig.layout())
        rp = self._get_provider_uuid_by_name('host1_pci_0000_19_00_0')
        self.assertEqual(7, self._get_provider_inventory(rp)[orc.VGPU][
            'total'])
        self.assertIn('CUSTOM_VGPU_H200X_1_18C',
                      self._get_provider_traits(rp))
        server = self._create_server(
            image_uuid=IMAGE, flavor_id=self._create_flavor(extra_spec={
                'resources:VGPU': '1',
                'trait:CUSTOM_VGPU_H200X_1_18C': 'required'}),
            networks='none', expected_state='ACTIVE')
        allocations = self._get_allocations_by_server_uuid(server['id'])
        self.assertEqual({orc.VGPU: 1}, allocations[rp]['resources'])
        (vf,) = self.guest_devices(self.compute, server)
        (hostdev,) = lxml_etree.fromstring(self.guest_xml(
            self.compute, server).encode()).iter('hostdev')
        self.assertEqual(('pci', 'no'), (hostdev.get('type'),
                                         hostdev.get('managed')))
        nvidia = os.path.join(self.compute.driver._vgpu_ext().backend.root,
                              'sys', 'bus', 'pci', 'devices', vf, 'nvidia')
        with open(os.path.join(nvidia, 'current_vgpu_type')) as f:
            self.assertEqual('1414', f.read().strip())
        with open(os.path.join(nvidia, 'gpu_instance_id')) as f:
            self.assertIn(int(f.read()), [gi.id for gi in gpu.mig.instances])
        # A restart keeps the instances and the server's vGPU.
        self.compute = self.restart_compute_service('host1')
        self.assertEqual([vf], self.guest_devices(self.compute, server))
        self.assertEqual(gpu.mig, next(
            g for g in self.compute.driver._vgpu_ext().backend.scan().gpus
            if g.address == self.GPU).mig)


class TestMigTimeSliced(MigTestBase):
    """Blackwell: several servers' vGPUs on one GPU instance."""

    profile = 'rtx-pro-6000-bw-vfio'
    enabled_types = 'nvidia-2725'     # DC-2-12C: four per 2g.48gb
    GPU = '0001:04:00.0'
    LAYOUT = '2g.48gb:1'

    def test_four_servers_on_one_gpu_instance(self):
        gpu = self.start_and_scan()
        (gi,) = gpu.mig.instances
        rp = self._get_provider_uuid_by_name('host1_pci_0001_04_00_0')
        self.assertEqual(4, self._get_provider_inventory(rp)[orc.VGPU][
            'total'])
        flavor = self._create_flavor(extra_spec={'resources:VGPU': '1'})
        root = self.compute.driver._vgpu_ext().backend.root
        vfs = []
        for _ in range(4):
            server = self._create_server(
                image_uuid=IMAGE, flavor_id=flavor, networks='none',
                expected_state='ACTIVE')
            (vf,) = self.guest_devices(self.compute, server)
            vfs.append(vf)
            with open(os.path.join(root, 'sys', 'bus', 'pci', 'devices', vf,
                                   'nvidia', 'gpu_instance_id')) as f:
                self.assertEqual(gi.id, int(f.read()))
        self.assertEqual(4, len(set(vfs)))
        self.assertEqual(4, self.provider_usage('host1_pci_0001_04_00_0'))
        self._create_server(image_uuid=IMAGE, flavor_id=flavor,
                            networks='none', expected_state='ERROR')


class TestVgpuScheduler(DriverTestBase):
    """[mdev_<type>] vgpu_scheduler: set when idle, a trait flavors use."""

    enabled_types = 'nvidia-18,nvidia-22'
    FIXED = 'CUSTOM_VGPU_SCHED_FIXED_SHARE'
    BEST = 'CUSTOM_VGPU_SCHED_BEST_EFFORT'

    def setUp(self):
        super().setUp()
        self.device_addresses('nvidia-18', '0000:84:00.0')
        self.device_addresses('nvidia-22', '0000:85:00.0')
        devices_conf.register_type_opts(nova_conf.CONF, 'nvidia-18')
        # The simulated host's NVML offers the scheduler (Pascal and
        # newer on a real host), before nova-compute starts.
        simulated_scheduler.offer(os.path.join(self.state, 'host1',
                                               'simulated-host'))

    def traits(self, address):
        return set(self._get_provider_traits(self._get_provider_uuid_by_name(
            'host1_pci_%s' % address.replace(':', '_').replace('.', '_'))))

    def test_set_at_start_and_required_by_a_flavor(self):
        self.flags(vgpu_scheduler='fixed_share', vgpu_scheduler_timeslice_ms=4,
                   group='mdev_nvidia-18')
        self.compute = self.start_vgpu_compute('host1')
        self.assertIn(self.FIXED, self.traits('0000:84:00.0'))
        self.assertNotIn(self.BEST, self.traits('0000:84:00.0'))
        self.assertIn(self.BEST, self.traits('0000:85:00.0'))
        gpu = next(g for g in self.compute.driver._vgpu_ext().backend.scan()
                   .gpus if g.address == '0000:84:00.0')
        self.assertEqual('fixed_share, 4 ms time slice',
                         gpu.vgpu_scheduler.words())
        flavor = self._create_flavor(extra_spec={
            'resources:VGPU': '1', 'trait:%s' % self.FIXED: 'required'})
        rp = self._get_provider_uuid_by_name('host1_pci_0000_84_00_0')
        for _ in range(3):
            server = self._create_server(image_uuid=IMAGE, flavor_id=flavor,
                                         networks='none',
                                         expected_state='ACTIVE')
            self.assertEqual([rp], [
                u for u, a in self._get_allocations_by_server_uuid(
                    server['id']).items() if orc.VGPU in a['resources']])

    def test_a_busy_gpu_keeps_its_policy_until_idle(self):
        self.compute = self.start_vgpu_compute('host1')
        self.assertIn(self.BEST, self.traits('0000:84:00.0'))
        server = self._create_server(
            image_uuid=IMAGE, flavor_id=self._create_flavor(extra_spec={
                'resources:VGPU': '1',
                'trait:CUSTOM_VGPU_M60_2Q': 'required'}),
            networks='none', expected_state='ACTIVE')
        (device,) = self.guest_devices(self.compute, server)
        # The guest runs its vGPU (QEMU holds the device): NVML refuses.
        mark = os.path.join(self.compute.driver._vgpu_ext().backend.root,
                            'sys', 'bus', 'mdev', 'devices', device,
                            simulated.IN_USE_MARK)
        with open(mark, 'w') as f:
            f.write(server['id'])
        self.flags(vgpu_scheduler='fixed_share', group='mdev_nvidia-18')
        self.compute = self.restart_compute_service('host1')
        self._run_periodics()
        self.assertIn(self.BEST, self.traits('0000:84:00.0'))
        self.assertNotIn(self.FIXED, self.traits('0000:84:00.0'))
        # Idle (QEMU gone with the server): the periodic task sets it.
        os.unlink(mark)
        self._delete_server(server)
        self._run_periodics()
        self.assertIn(self.FIXED, self.traits('0000:84:00.0'))
        self.assertNotIn(self.BEST, self.traits('0000:84:00.0'))


class TestOperatorTraits(TwoTypesTestBase):
    """An operator's own traits on GPU providers survive the driver.

    As Nova's vGPU guide has them: a custom trait per type on the GPU
    providers, required by flavors; kept at a restart and at a refresh of
    Nova's provider cache.
    """

    def setUp(self):
        super().setUp()
        self.rp = self._get_provider_uuid_by_name('host1_pci_0000_84_00_0')

    def add_traits(self, rp, *traits):
        """As ``openstack resource provider trait set`` does."""
        for trait in traits:
            self.placement.put('/traits/%s' % trait, {}, version='1.6')
        body = self.placement.get('/resource_providers/%s/traits' % rp,
                                  version='1.6').body
        self.placement.put('/resource_providers/%s/traits' % rp, {
            'resource_provider_generation':
                body['resource_provider_generation'],
            'traits': sorted(set(body['traits']) | set(traits))},
            version='1.6')

    def test_operator_trait_kept_stale_own_trait_removed(self):
        self.add_traits(self.rp, 'CUSTOM_NVIDIA_18', 'CUSTOM_VGPU_STALE')
        flavor = self._create_flavor(extra_spec={
            'resources:VGPU': '1', 'trait:CUSTOM_NVIDIA_18': 'required'})
        # A refresh of Nova's provider cache (every [compute]
        # resource_provider_association_refresh seconds) reads the traits
        # back from Placement; then the periodic task updates the tree.
        self.compute.manager.rt.reportclient.clear_provider_cache()
        self._run_periodics()
        traits = set(self._get_provider_traits(self.rp))
        self.assertIn('CUSTOM_NVIDIA_18', traits)
        self.assertIn('CUSTOM_VGPU_M60_2Q', traits)
        self.assertNotIn('CUSTOM_VGPU_STALE', traits)
        server = self._create_server(image_uuid=IMAGE, flavor_id=flavor,
                                     networks='none',
                                     expected_state='ACTIVE')
        allocations = self._get_allocations_by_server_uuid(server['id'])
        self.assertIn(self.rp, allocations)
        # And across a restart of nova-compute.
        self.compute = self.restart_compute_service('host1')
        self._run_periodics()
        self.assertIn('CUSTOM_NVIDIA_18',
                      self._get_provider_traits(self.rp))
        self._create_server(image_uuid=IMAGE, flavor_id=flavor,
                            networks='none', expected_state='ACTIVE')


class TestFleetConfig(DriverTestBase):
    """One nova.conf for a fleet: types and addresses of other hosts' GPUs.

    This host (an M60) starts and serves its own type; the A40's type of
    the other hosts, and the address of their GPU, serve nothing here.
    """

    enabled_types = 'nvidia-18,nvidia-558'

    def setUp(self):
        super().setUp()
        self.device_addresses('nvidia-558', '0000:3d:00.0', '0000:84:00.0')
        self.compute = self.start_vgpu_compute('host1')

    def test_starts_and_serves_what_the_host_has(self):
        for gpu in ('pci_0000_84_00_0', 'pci_0000_85_00_0'):
            rp = self._get_provider_uuid_by_name('host1_' + gpu)
            self.assertIn('CUSTOM_VGPU_NVIDIA_18',
                          self._get_provider_traits(rp))
        server = self._create_server(
            image_uuid=IMAGE, flavor_id=self.small_vgpu_flavor(),
            networks='none', expected_state='ACTIVE')
        (device,) = self.guest_devices(self.compute, server)
        self.assertIn(device, [d.device_id for d in
                               self.host_devices(self.compute)])


class TestDevicesOfOtherOwners(DriverTestBase):
    """An mdev in a guest that is not this project's is left alone.

    Nova 34 makes the mdevs of Cyborg's accelerator requests itself (at
    spawn and hard reboot, ``_allocate_cyborg_mdevs``) on GPUs Cyborg
    manages. Nova's Cyborg fixture has no MDEV flow through the API, so
    the test makes what that flow leaves: an mdev on a GPU this host serves
    no vGPU from (0000:84:00.0; only 0000:85:00.0 is configured), in the
    domain of a server that also holds a vGPU of this project's.
    """

    def setUp(self):
        super().setUp()
        self.device_addresses('nvidia-18', '0000:85:00.0')
        attach, _ = fake_libvirt.mdev_hotplug(fake_libvirt.load())
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Domain.attachDevice', attach))
        self.compute = self.start_vgpu_compute('host1')

    def test_neither_adopted_nor_foreign(self):
        server = self._create_server(
            image_uuid=IMAGE, flavor_id=self.small_vgpu_flavor(),
            networks='none', expected_state='ACTIVE')
        (own,) = self.guest_devices(self.compute, server)
        ext = self.compute.driver._vgpu_ext()
        cyborg = uuidutils.generate_uuid()
        ext.backend.create_device('pci_0000_84_00_0', 'nvidia-18', cyborg)
        guest = self.compute.driver._host.get_guest(
            objects.Instance.get_by_uuid(context.get_admin_context(),
                                         server['id']))
        guest.attach_device(vgpu_hooks.Hostdev('mdev', cyborg))
        self.assertEqual({own, cyborg},
                         set(self.guest_devices(self.compute, server)))
        self._run_periodics()
        self.compute = self.restart_compute_service('host1')
        self._run_periodics()
        ext = self.compute.driver._vgpu_ext()
        self.assertIsNone(ext.ledger.get(cyborg))
        self.assertEqual([own], [e.device_id for e in ext.ledger.all()])
        self.assertIn(cyborg, [d.device_id for d in
                               self.host_devices(self.compute)])
        self.assertEqual({own, cyborg},
                         set(self.guest_devices(self.compute, server)))
        # Deleting the server frees this project's device only.
        self._delete_server(server)
        self.assertEqual([cyborg], [d.device_id for d in
                                    self.host_devices(self.compute)])


class TestCapacity(DriverTestBase):

    def setUp(self):
        super().setUp()
        self.compute = self.start_vgpu_compute('host1')
        # Small, so that only the vGPUs run out.
        self.flavor = self.small_vgpu_flavor()

    def test_fill_to_capacity_then_no_valid_host(self):
        # Eight vGPUs (two GPUs x four M60-2Q): eight boots sent at once,
        # then waited for.
        servers = [self.api.post_server({'server': self._build_server(
            image_uuid=IMAGE, flavor_id=self.flavor, networks='none')})
            for _ in range(8)]
        for server in servers:
            self._wait_for_state_change(server, 'ACTIVE')
        devices = self.host_devices(self.compute)
        self.assertEqual(8, len({d.device_id for d in devices}))
        one_more = self._create_server(image_uuid=IMAGE,
                                       flavor_id=self.flavor,
                                       networks='none',
                                       expected_state='ERROR')
        self.assertIn('No valid host', one_more['fault']['message'])
        self.assertEqual(8, len(self.host_devices(self.compute)))
        self.assertEqual(8, len(self.compute.driver._vgpu_ext()
                                .ledger.all()))


class TestGpuThatServesNothingNow(DriverTestBase):
    """A GPU whose room other owners took: its provider goes, quietly."""

    def test_provider_removed_at_the_next_periodic_task(self):
        self.compute = self.start_vgpu_compute('host1')
        name = 'host1_pci_0000_85_00_0'
        rp = self._get_provider_uuid_by_name(name)
        # An operator's trait on it (Nova's vGPU guide has operators add
        # them), which flavors may require.
        traits = self._get_provider_traits(rp)
        self.placement.put('/traits/CUSTOM_RACK_7', None, version='1.6')
        generation = self.placement.get(
            '/resource_providers/%s' % rp).body['generation']
        self.placement.put('/resource_providers/%s/traits' % rp, {
            'traits': traits + ['CUSTOM_RACK_7'],
            'resource_provider_generation': generation}, version='1.6')
        # An M60-8Q made outside OpenStack: a time-sliced GPU holds one
        # type at a time, so nvidia-18 has no room left on it.
        self.compute.driver._vgpu_ext().backend.create_device(
            'pci_0000_85_00_0', 'nvidia-22', uuidutils.generate_uuid())
        # (A change made outside the allocator shows at its next scan.)
        self.compute.driver._vgpu_ext().allocator.view.forget()
        self._run_periodics()
        self.assertEqual([], self.placement.get(
            '/resource_providers?name=%s' % name
        ).body['resource_providers'])
        self.assertNotIn('ReshapeNeeded', self.stdlog.logger.output)
        # Said, with the operator's trait that went with it.
        self.assertIn('removing GPU provider %s' % name,
                      self.stdlog.logger.output)
        self.assertIn('the operator traits CUSTOM_RACK_7 go with it',
                      self.stdlog.logger.output)


class TestOneTree(DriverTestBase):
    """The publisher (demo, tests) writes the tree the driver gives Nova."""

    def test_publisher_finds_nothing_to_change(self):
        self.compute = self.start_vgpu_compute('host1')
        flavor = self._create_flavor(extra_spec={'resources:VGPU': '1'})
        self._create_server(image_uuid=IMAGE, flavor_id=flavor,
                            networks='none', expected_state='ACTIVE')
        ext = self.compute.driver._vgpu_ext()
        client = placement_client.PlacementClient.for_endpoint(
            self.placement.fixture.endpoint)
        result = publish.TreePublisher(
            client, 'host1', owner_trait=compat.features().owner_trait
        ).sync(ext.assignment)
        self.assertEqual(((), (), (), ()), (
            result.created, result.updated, result.deleted,
            result.reshaped))
        self.assertEqual(2, len(result.desired.providers))


class TestOwnershipAudit(DriverTestBase):
    """The audit of ownership on a host Nova runs: guests through libvirt."""

    def test_agreement_then_a_guest_using_another_s_device(self):
        self.compute = self.start_vgpu_compute('host1')
        flavor = self._create_flavor(extra_spec={'resources:VGPU': '1'})
        server = self._create_server(image_uuid=IMAGE, flavor_id=flavor,
                                     networks='none', expected_state='ACTIVE')
        ext = self.compute.driver._vgpu_ext()
        client = placement_client.PlacementClient.for_endpoint(
            self.placement.fixture.endpoint)
        gpus = {inventory.provider_name('host1', a.gpu.name): a.gpu.name
                for a in ext.assignment.gpus}
        connection = self.compute.driver._host.get_connection()

        def audit():
            return ownership.join(
                ownership.read_allocations(client, 'host1', gpus),
                ext.ledger.all(), ext.ledger.links(), ext.backend.scan(),
                ownership.guests_of(connection))

        guests = ownership.guests_of(connection)
        (device,) = guests[server['id']]
        self.assertEqual([], audit())
        # Another domain (a guest started by hand) given the server's
        # device in its XML.
        intruder = '8c0ef8f7-0d4a-4a3c-9a43-2b1f0c9d5e61'
        connection.createXML(
            '<domain type="kvm"><name>by-hand</name><uuid>%s</uuid>'
            '<memory>131072</memory><vcpu>1</vcpu><os><type>hvm</type>'
            '</os><devices>%s</devices></domain>' % (
                intruder, guest_mod.hostdev_xml('mdev', device)), 0)
        (finding,) = audit()
        self.assertEqual((findings.OWNER_GUEST_DEVICE_NOT_ITS_OWN, intruder),
                         (finding.code, finding.where))
        self.assertIn(server['id'], finding.why)


class TestTotalFlooredAtAllocations(DriverTestBase):
    """The driver's tree floors totals as the publisher and audit do."""

    def test_lower_capacity_keeps_allocated_units(self):
        self.compute = self.start_vgpu_compute('host1')
        gpu84 = self._get_provider_uuid_by_name('host1_pci_0000_84_00_0')
        # Three units held on the first GPU by consumers that have no
        # device there (yet): boots in flight, or devices lost.
        for _ in range(3):
            self.assertEqual(204, self.placement.put(
                '/allocations/%s' % uuidutils.generate_uuid(), {
                    'allocations': {gpu84: {'resources': {orc.VGPU: 1}}},
                    'project_id': self.api.project_id,
                    'user_id': self.api.auth_user,
                    'consumer_generation': None}, version='1.28').status)
        # The host now may hold one device of the type: the first GPU's
        # desired total is 1, the second's 0.
        nova_devices.register_dynamic_opts(nova_conf.CONF)
        self.flags(max_instances=1, group='mdev_nvidia-18')
        self.compute = self.restart_compute_service('host1')
        inv = self._get_provider_inventory(gpu84)
        self.assertEqual(3, inv[orc.VGPU]['total'])
        # Nothing is allocated on the second GPU: its provider goes.
        self.assertEqual([], self.placement.get(
            '/resource_providers?name=host1_pci_0000_85_00_0'
        ).body['resource_providers'])
        self.assertIn('3 VGPU allocated in Placement but the GPU has room '
                      'for 1', self.stdlog.logger.output)


class TestStress(DriverTestBase):
    """Boots and deletes sent at once, as nova-compute's threads meet them.

    Nova 34's nova-compute runs native threads; the suite runs in both
    modes. Two rounds: eleven boots at once on a host of eight vGPUs (eight
    go ACTIVE, three get No valid host), then eight deletes at once.
    Afterwards Placement, the ledger, the host and the guests agree.
    """

    def setUp(self):
        super().setUp()
        # More servers at once than the default quota of ten.
        self.flags(instances=-1, cores=-1, ram=-1, group='quota')
        self.compute = self.start_vgpu_compute('host1')
        self.flavor = self.small_vgpu_flavor()
        self.gpus = {inventory.provider_uuid('host1_' + g): g
                     for g in ('pci_0000_84_00_0', 'pci_0000_85_00_0')}

    def settle(self, server, seconds=120):
        """The server once ACTIVE, or in ERROR with its fault recorded."""
        deadline = time.monotonic() + seconds
        while True:
            server = self.api.get_server(server['id'])
            if server['status'] == 'ACTIVE' or (
                    server['status'] == 'ERROR' and 'fault' in server):
                return server
            if time.monotonic() > deadline:
                self.fail('server %s did not settle: %s' % (
                    server['id'], server))
            time.sleep(0.2)

    def assertAgree(self, servers):
        """Placement, ledger, host devices and guest XML: one picture."""
        ledger = self.compute.driver._vgpu_ext().ledger
        held = {e.device_id: (e.consumer, e.gpu) for e in ledger.all()}
        on_host = {d.device_id: d.parent
                   for d in self.host_devices(self.compute)}
        self.assertEqual({d: gpu for d, (_, gpu) in held.items()}, on_host)
        per_gpu = {}
        for server in servers:
            allocations = self._get_allocations_by_server_uuid(server['id'])
            (rp,) = [rp for rp, a in allocations.items()
                     if orc.VGPU in a['resources']]
            mine = sorted(d for d, (c, _) in held.items()
                          if c == server['id'])
            self.assertEqual(1, len(mine), server['id'])
            self.assertEqual(self.gpus[rp], held[mine[0]][1])
            self.assertEqual(mine, self.guest_devices(self.compute, server))
            per_gpu[rp] = per_gpu.get(rp, 0) + 1
        for rp in self.gpus:
            self.assertEqual(per_gpu.get(rp, 0),
                             self._get_provider_usages(rp).get(orc.VGPU, 0))
        self.assertEqual(len(servers), len(held))

    def test_concurrent_boots_and_deletes(self):
        for _round in range(2):
            posted = [self.api.post_server({'server': self._build_server(
                image_uuid=IMAGE, flavor_id=self.flavor, networks='none')})
                for _ in range(11)]
            settled = [self.settle(s) for s in posted]
            active = [s for s in settled if s['status'] == 'ACTIVE']
            failed = [s for s in settled if s['status'] == 'ERROR']
            self.assertEqual((8, 3), (len(active), len(failed)))
            for server in failed:
                self.assertIn('No valid host', server['fault']['message'])
            self.assertAgree(active)
            for server in active + failed:
                self.api.delete_server(server['id'])
            for server in active + failed:
                self._wait_until_deleted(server)
            self.assertAgree([])
            self.assertEqual([], self.compute.driver._host.list_guests())


class TestLifecycle(DriverTestBase):

    def setUp(self):
        super().setUp()
        attach, detach = fake_libvirt.mdev_hotplug(fake_libvirt.load())
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Domain.attachDevice', attach))
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Domain.detachDevice', detach))
        self.allow_rescue()
        self.compute = self.start_vgpu_compute('host1')
        self.flavor = self._create_flavor(extra_spec={'resources:VGPU': '1'})
        self.server = self._create_server(
            image_uuid=IMAGE, flavor_id=self.flavor, networks='none',
            expected_state='ACTIVE')

    def consumers(self):
        return {e.consumer for e in
                self.compute.driver._vgpu_ext().ledger.all()} - {None}

    def own_devices(self):
        """Devices on the host that the ledger gives to an instance.

        (A profile may come with an unused device, which is free.)
        """
        on_host = {d.device_id for d in self.host_devices(self.compute)}
        return [e.device_id for e in
                self.compute.driver._vgpu_ext().ledger.all()
                if e.consumer is not None and e.device_id in on_host]

    def devices_in_guest(self):
        return self.guest_devices(self.compute, self.server)

    def test_hard_reboot_keeps_the_device(self):
        before = self.devices_in_guest()
        self._reboot_server(self.server, hard=True)
        self.assertEqual(before, self.devices_in_guest())
        self.assertEqual(before, self.own_devices())

    def test_shelve_offload_frees_and_unshelve_claims(self):
        self._shelve_server(self.server, 'SHELVED_OFFLOADED')
        self.assertEqual([], self.own_devices())
        self.assertEqual(set(), self.consumers())
        self._unshelve_server(self.server)
        (device,) = self.own_devices()
        self.assertEqual([device], self.devices_in_guest())

    def test_hard_reboot_repairs_an_instance_that_lost_its_device(self):
        ext = self.compute.driver._vgpu_ext()
        (lost,) = self.own_devices()
        gpu = ext.ledger.get(lost).gpu
        # A broken host state: the device and its ledger entry gone.
        ext.backend.remove_device(lost)
        with ext.ledger.transaction():
            ext.ledger.delete(lost)
        self._reboot_server(self.server, hard=True)
        (device,) = self.own_devices()
        self.assertEqual([device], self.devices_in_guest())
        self.assertEqual(gpu, ext.ledger.get(device).gpu)
        self.assertEqual({self.server['id']}, self.consumers())

    def test_rebuild_keeps_the_device(self):
        before = self.devices_in_guest()
        self._rebuild_server(self.server, IMAGE)
        self.assertEqual(before, self.devices_in_guest())
        self.assertEqual(before, self.own_devices())
        self.assertEqual({self.server['id']}, self.consumers())

    def test_stop_and_start_keep_the_device(self):
        before = self.devices_in_guest()
        self._stop_server(self.server)
        self.assertEqual(before, self.own_devices())
        self._start_server(self.server)
        self.assertEqual(before, self.devices_in_guest())
        self.assertEqual(before, self.own_devices())

    def test_suspend_detaches_and_resume_reattaches(self):
        before = self.devices_in_guest()
        self.assertEqual(1, len(before))
        self.api.post_server_action(self.server['id'], {'suspend': None})
        self._wait_for_state_change(self.server, 'SUSPENDED')
        # Detached from the guest (libvirt cannot save a guest's memory
        # with a vGPU in it), yet still the instance's on the host.
        self.assertEqual([], self.devices_in_guest())
        self.assertEqual(before, self.own_devices())
        self.assertEqual({self.server['id']}, self.consumers())
        self.api.post_server_action(self.server['id'], {'resume': None})
        self._wait_for_state_change(self.server, 'ACTIVE')
        self.assertEqual(before, self.devices_in_guest())

    def test_rescue_and_unrescue_keep_the_device(self):
        before = self.devices_in_guest()
        self.api.post_server_action(self.server['id'], {'rescue': {}})
        self._wait_for_state_change(self.server, 'RESCUE')
        self.assertEqual(before, self.devices_in_guest())
        self.api.post_server_action(self.server['id'], {'unrescue': None})
        self._wait_for_state_change(self.server, 'ACTIVE')
        self.assertEqual(before, self.devices_in_guest())
        self.assertEqual(before, self.own_devices())


class TestVfioLifecycle(TestLifecycle):
    """The same life on NVIDIA's vendor-specific VFIO.

    The vGPU is a VF, given to the guest as a PCI hostdev that Nova's own
    mdev code does not see.
    """

    profile = 'a40-vfio'
    enabled_types = 'nvidia-558'


class TestVfioFullGpuKeepsItsName(DriverTestBase):
    """NVIDIA's driver stops listing a type on a full GPU; nothing is lost.

    A type's name (and its name trait) is remembered per GPU in the ledger.
    """

    profile = 'a40-vfio'
    enabled_types = 'nvidia-558'
    ADDRESS = '0000:3d:00.0'
    NAME = 'NVIDIA A40-2Q'
    TRAIT = 'CUSTOM_VGPU_A40_2Q'
    TOTAL = 24      # 48 GB / 2 GB: every VF it can hold

    def test_filled_and_restarted_keeps_traits_and_total(self):
        type_id = self.enabled_types
        self.compute = self.start_vgpu_compute('host1')
        rp = self._get_provider_uuid_by_name(
            'host1_pci_' + self.ADDRESS.replace(':', '_').replace('.', '_'))
        self.assertIn(self.TRAIT, self._get_provider_traits(rp))
        backend = self.compute.driver._vgpu_ext().backend
        snapshot = backend.scan()
        gpu = next(g for g in snapshot.gpus if g.address == self.ADDRESS)
        held = {d.parent for d in snapshot.mediated_devices}
        for parent in gpu.parents:  # other owners fill the GPU
            if parent.name not in held:
                try:
                    backend.create_device(parent.name, type_id,
                                          parent.address)
                except Exception:
                    break
        gpu = next(g for g in backend.scan().gpus
                   if g.address == self.ADDRESS)
        self.assertIsNone(gpu.type_name(type_id))  # the GPU is full
        self._run_periodics()
        total = self._get_provider_inventory(rp)[orc.VGPU]['total']
        self.compute = self.restart_compute_service('host1')
        traits = self._get_provider_traits(rp)
        self.assertIn(self.TRAIT, traits)
        self.assertIn('CUSTOM_VGPU_' + type_id.upper().replace('-', '_'),
                      traits)
        self.assertEqual(total, self._get_provider_inventory(rp)[
            orc.VGPU]['total'])
        self.assertEqual(self.TOTAL, total)
        # The name itself, remembered in the ledger across the restart.
        (served,) = [a for a in self.compute.driver._vgpu_ext()
                     .assignment.gpus if a.gpu.address == self.ADDRESS]
        self.assertEqual(self.NAME, served.type_name)


class TestL40sFullGpuKeepsItsName(TestVfioFullGpuKeepsItsName):

    profile = 'l40s-vfio'
    enabled_types = 'nvidia-1150'
    ADDRESS = '0000:c1:00.0'
    NAME = 'NVIDIA L40S-4Q'
    TRAIT = 'CUSTOM_VGPU_L40S_4Q'
    TOTAL = 12


class TestH100MixedSizeGpuKeepsItsName(TestVfioFullGpuKeepsItsName):

    profile = 'h100-vfio'
    enabled_types = 'nvidia-2505'
    ADDRESS = '0000:43:00.0'    # in mixed-size mode
    NAME = 'NVIDIA H100XM-16C'
    TRAIT = 'CUSTOM_VGPU_H100XM_16C'
    TOTAL = 4                   # 6 in equal-size mode


class TestH200FullGpuKeepsItsName(TestVfioFullGpuKeepsItsName):

    profile = 'h200-vfio'
    enabled_types = 'nvidia-2603'
    ADDRESS = '0000:3b:00.0'
    NAME = 'NVIDIA H200X-8C'
    TRAIT = 'CUSTOM_VGPU_H200X_8C'
    TOTAL = 16                  # NVIDIA's table, not 141 GB / 8 GB


class TestBlackwellFullGpuKeepsItsName(TestVfioFullGpuKeepsItsName):

    profile = 'rtx-pro-6000-bw-vfio'
    enabled_types = 'nvidia-2707'
    ADDRESS = '0001:04:00.0'
    NAME = 'NVIDIA RTX Pro 6000 Blackwell DC-24Q'
    TRAIT = 'CUSTOM_VGPU_RTX_PRO_6000_BLACKWELL_DC_24Q'
    TOTAL = 4


class TestMoves(DriverTestBase):

    def setUp(self):
        super().setUp()
        self.allow_moves()
        self.compute1 = self.start_vgpu_compute('host1')
        self.flavor = self.small_vgpu_flavor()
        self.bigger = self.small_vgpu_flavor(memory_mb=512)

    def devices(self, compute):
        return {d.device_id for d in self.host_devices(compute)}

    def owners(self, compute):
        return {e.consumer for e in compute.driver._vgpu_ext().ledger.all()}

    def _confirm_resize(self, server, host='host1'):
        # As Nova's own vGPU tests do: the libvirt driver's cleanup looks at
        # CONF.host, which is the last started compute's in one process.
        orig = nova_conf.CONF.host
        self.flags(host=host)
        super()._confirm_resize(server)
        self.flags(host=orig)
        self._wait_for_state_change(server, 'ACTIVE')

    def test_resize_revert_and_confirm_across_hosts(self):
        compute2 = self.start_vgpu_compute('host2')
        server = self._create_server(
            image_uuid=IMAGE, flavor_id=self.flavor, networks='none',
            host='host1', expected_state='ACTIVE')
        original = self.devices(self.compute1)
        self.assertEqual(1, len(original))
        self.flags(allow_resize_to_same_host=False)
        self._resize_server(server, self.bigger)
        self.assertEqual(original, self.devices(self.compute1))
        self.assertEqual(1, len(self.devices(compute2)))
        # As Nova's allocations: the source's are the migration's until
        # the resize is confirmed or reverted, the destination's the
        # instance's.
        migration = self.api.get_migrations()[0]['uuid']
        self.assertEqual({migration}, self.owners(self.compute1))
        self.assertEqual({server['id']}, self.owners(compute2))

        self._revert_resize(server)
        self.assertEqual(original, self.devices(self.compute1))
        self.assertEqual(set(), self.devices(compute2))
        self.assertEqual(original,
                         set(self.guest_devices(self.compute1, server)))

        self._resize_server(server, self.bigger)
        self._confirm_resize(server, host='host1')
        self.assertEqual(set(), self.devices(self.compute1))
        self.assertEqual(1, len(self.devices(compute2)))
        self._delete_server(server)
        self.assertEqual(set(), self.devices(compute2))
        self.assertEqual(set(), self.owners(compute2))

    def test_resize_on_one_host_revert_then_confirm(self):
        server = self._create_server(
            image_uuid=IMAGE, flavor_id=self.flavor, networks='none',
            expected_state='ACTIVE')
        original = self.devices(self.compute1)
        self._resize_server(server, self.bigger)
        # Both sets on one host, told apart by their consumers.
        self.assertEqual(2, len(self.devices(self.compute1)))
        self.assertEqual(2, len(self.owners(self.compute1)))
        self._revert_resize(server)
        self.assertEqual(original, self.devices(self.compute1))
        self.assertEqual({server['id']}, self.owners(self.compute1))
        self.assertEqual(original,
                         set(self.guest_devices(self.compute1, server)))

        self._resize_server(server, self.bigger)
        new = self.devices(self.compute1) - original
        self.assertEqual(new, set(self.guest_devices(self.compute1, server)))
        self._confirm_resize(server, host='host1')
        self.assertEqual(new, self.devices(self.compute1))
        self.assertEqual({server['id']}, self.owners(self.compute1))
        self._delete_server(server)
        self.assertEqual(set(), self.devices(self.compute1))

    def test_cold_migration(self):
        compute2 = self.start_vgpu_compute('host2')
        server = self._create_server(
            image_uuid=IMAGE, flavor_id=self.flavor, networks='none',
            host='host1', expected_state='ACTIVE')
        self._migrate_server(server)
        self._confirm_resize(server, host='host1')
        self.assertEqual(set(), self.devices(self.compute1))
        (device,) = self.devices(compute2)
        self.assertEqual([device], self.guest_devices(compute2, server))


class TestHostEvents(DriverTestBase):

    def setUp(self):
        super().setUp()
        self.compute1 = self.start_vgpu_compute('host1')
        self.flavor = self.small_vgpu_flavor()

    def test_restart_after_a_host_reboot_brings_the_devices_back(self):
        servers = [self._create_server(
            image_uuid=IMAGE, flavor_id=self.flavor, networks='none',
            expected_state='ACTIVE') for _ in range(3)]
        before = {d.device_id: d.parent for d in
                  self.host_devices(self.compute1)}
        self.assertEqual(3, len(before))
        # The host reboots: its devices are gone, the ledger stays.
        kernel = self.compute1.driver._vgpu_ext().backend
        for device_id in before:
            kernel.remove_device(device_id)
        self.assertEqual((), kernel.scan().mediated_devices)
        self.compute1 = self.restart_compute_service('host1')
        after = {d.device_id: d.parent for d in
                 self.host_devices(self.compute1)}
        self.assertEqual(before, after)
        for server in servers:
            (device,) = self.guest_devices(self.compute1, server)
            self.assertIn(device, after)

    def test_periodic_task_frees_what_no_instance_holds(self):
        server = self._create_server(
            image_uuid=IMAGE, flavor_id=self.flavor, networks='none',
            expected_state='ACTIVE')
        ext = self.compute1.driver._vgpu_ext()
        ext.allocator.orphan_grace = 0  # [vgpu_nova_ext] orphan_grace_period
        (kept,) = self.guest_devices(self.compute1, server)
        # A claim no instance here holds (a live migration's destination
        # claim that the conductor abandoned, say).
        rp = self._get_provider_uuid_by_name('host1_pci_0000_85_00_0')
        (leaked,) = ext.allocator.claim(uuidutils.generate_uuid(), {
            rp: {'resources': {'VGPU': 1}}}).devices
        self._run_periodics()  # marked an orphan
        self.assertIsNotNone(ext.ledger.get(leaked.device_id).orphaned_at)
        self._run_periodics()  # freed: past the grace period
        self.assertIsNone(ext.ledger.get(leaked.device_id))
        self.assertEqual([kept], [d.device_id for d in
                                  self.host_devices(self.compute1)])
        self.assertEqual({server['id']}, {
            e.consumer for e in ext.ledger.all()})

    def test_periodic_task_adopts_a_guest_device_the_ledger_lost(self):
        # The periodic task reads the guests' XML only when the host holds
        # a device the ledger does not know (a ledger restored from an old
        # backup, a device attached by hand); then it is adopted.
        server = self._create_server(
            image_uuid=IMAGE, flavor_id=self.flavor, networks='none',
            expected_state='ACTIVE')
        ext = self.compute1.driver._vgpu_ext()
        (device,) = self.guest_devices(self.compute1, server)
        with ext.ledger.transaction():
            ext.ledger.delete(device)
        self._run_periodics()
        entry = ext.ledger.get(device)
        self.assertEqual((server['id'], 'active', 'adopted'),
                         (entry.consumer, entry.state, entry.origin))

    def test_a_quiet_periodic_task_reads_no_host_a_change_is_seen(self):
        server = self._create_server(
            image_uuid=IMAGE, flavor_id=self.flavor, networks='none',
            expected_state='ACTIVE')
        ext = self.compute1.driver._vgpu_ext()
        (device,) = self.guest_devices(self.compute1, server)
        # Counted, not changed: the backend's own scan.
        scans = self.useFixture(fixtures.MockPatchObject(
            ext.backend, 'scan', wraps=ext.backend.scan)).mock
        self._run_periodics()   # the first since the boot: a full one
        full = scans.call_count
        self.assertGreaterEqual(full, 1)
        self._run_periodics()   # nothing changed: the host is not read
        self.assertEqual(full, scans.call_count)
        # The device removed behind the ledger's back: the mdev bus's
        # listing changes, the next task is a full one and makes it again.
        ext.backend.remove_device(device)
        self._run_periodics()
        self.assertGreater(scans.call_count, full)
        self.assertIn(device, {d.device_id for d in
                               self.host_devices(self.compute1)})
        # Another process's commit to the ledger (vgpu-nova-ext reconcile
        # from a shell) shows too: here it forgets the device, which the
        # next task adopts again from the guest's domain.
        other = ledger_mod.Ledger(ext.state_path)
        self.addCleanup(other.close)
        with other.transaction():
            other.delete(device)
        before = scans.call_count
        self._run_periodics()
        self.assertGreater(scans.call_count, before)
        self.assertEqual((server['id'], 'adopted'), (
            ext.ledger.get(device).consumer, ext.ledger.get(device).origin))
        # Past full_reconcile_interval a task is a full one whatever the
        # signature says.
        self._run_periodics()
        before = scans.call_count
        ext.quiet.interval = 0
        self._run_periodics()
        self.assertGreater(scans.call_count, before)

    def test_evacuated_instances_freed_when_the_source_comes_back(self):
        compute2 = self.start_vgpu_compute('host2')
        server = self._create_server(
            image_uuid=IMAGE, flavor_id=self.flavor, networks='none',
            host='host1', expected_state='ACTIVE')
        self.assertEqual(1, len(self.host_devices(self.compute1)))
        self.compute1.stop()
        service = self.api.get_services(host='host1',
                                        binary='nova-compute')[0]
        self.api.put_service(service['id'], {'forced_down': True})
        self._evacuate_server(server, expected_host='host2')
        self.assertEqual(1, len(self.host_devices(compute2)))
        # host1 comes back: it destroys the evacuated guest, and frees its
        # device.
        self.compute1 = self.restart_compute_service('host1')
        self.api.put_service(service['id'], {'forced_down': False})
        self.assertEqual((), self.host_devices(self.compute1))
        self.assertEqual([], self.compute1.driver._vgpu_ext().ledger.all())
        self.assertEqual(1, len(self.host_devices(compute2)))


class LiveMigrationBase(base.LibvirtMigrationMixin, DriverTestBase):
    """Live migration of a vGPU server, through Nova's own mdev path."""

    # The versions Nova requires for mdev live migration, per host.
    versions = {'src': (8006000, 8001000), 'dest': (8006000, 8001000)}

    def configure(self):
        """nova.conf of both hosts, before they start."""

    def setUp(self):
        super().setUp()
        self.configure()
        for name, (libvirt_version, qemu_version) in self.versions.items():
            self.start_compute(hostname=name, libvirt_version=libvirt_version,
                               qemu_version=qemu_version)
        self.src, self.dest = self.computes['src'], self.computes['dest']
        self.flavor = self.small_vgpu_flavor()
        # What the hosts hold before (a profile's own devices): unchanged
        # by a migration that fails.
        self.baseline = {name: self.device_ids(self.computes[name])
                         for name in self.versions}

    def ledger(self, compute):
        """{device: consumer} of the devices someone holds."""
        return {e.device_id: e.consumer
                for e in compute.driver._vgpu_ext().ledger.all()
                if e.consumer is not None}

    def device_ids(self, compute) -> set[str]:
        return {d.device_id for d in self.host_devices(compute)}

    def audit(self, hostname) -> list[findings.Finding]:
        """The audit of ownership of one host, guests included."""
        ext = self.computes[hostname].driver._vgpu_ext()
        client = placement_client.PlacementClient.for_endpoint(
            self.placement.fixture.endpoint)
        gpus = {inventory.provider_name(hostname, a.gpu.name): a.gpu.name
                for a in ext.assignment.gpus}
        return ownership.join(
            ownership.read_allocations(client, hostname, gpus),
            ext.ledger.all(), ext.ledger.links(), ext.backend.scan(),
            ownership.guests_of(
                self.computes[hostname].driver._host.get_connection()))

    def usage(self, hostname) -> int:
        """VGPU used on the host's GPU providers."""
        providers = self.placement.get(
            '/resource_providers', version='1.14').body[
                'resource_providers']
        return sum(self.provider_usage(rp['name']) for rp in providers
                   if rp['name'].startswith(hostname + '_pci_'))


class TestLiveMigration(LiveMigrationBase):

    def test_live_migration_moves_the_vgpu(self):
        self.server = self._create_server(
            image_uuid=IMAGE, flavor_id=self.flavor, networks='none',
            host='src', expected_state='ACTIVE')
        (source,) = self.ledger(self.src)
        self._live_migrate(self.server, 'completed')
        self.assertEqual('dest', self.api.get_server(
            self.server['id'])['OS-EXT-SRV-ATTR:host'])
        # A device of the destination, the server's, in the migrated XML;
        # the source's freed.
        (device, owner), = self.ledger(self.dest).items()
        self.assertEqual(self.server['id'], owner)
        self.assertNotEqual(source, device)
        self.assertEqual([device], self.guest_devices(self.dest, self.server))
        self.assertIn(device, [d.device_id for d in
                               self.host_devices(self.dest)])
        self.assertEqual({}, self.ledger(self.src))
        self.assertEqual(self.baseline['src'] - {source},
                         self.device_ids(self.src))
        self.assertEqual({'src': 0, 'dest': 1},
                         {h: self.usage(h) for h in ('src', 'dest')})

    def test_the_flavor_s_vgpu_params_written_at_the_destination(self):
        flavor = self._create_flavor(extra_spec={
            'resources:VGPU': '1',
            'vgpu_nova_ext:vgpu_params:frame_rate_limiter': '0'})
        self.server = self._create_server(
            image_uuid=IMAGE, flavor_id=flavor, networks='none', host='src',
            expected_state='ACTIVE')

        def params(compute):
            (device,) = self.guest_devices(compute, self.server)
            return compute.driver._vgpu_ext().backend.read_vgpu_params(
                'mdev', device)
        self.assertEqual((('frame_rate_limiter', '0'),), params(self.src))
        self._live_migrate(self.server, 'completed')
        self.assertEqual((('frame_rate_limiter', '0'),), params(self.dest))


class TestLiveMigrationFails(LiveMigrationBase):
    """The migration fails: the destination frees what it claimed."""

    def _migrate_stub(self, domain, destination, params, flags):
        # Mid-flight: both hosts hold a device for the server, and keep it
        # through the periodic tasks, the grace period notwithstanding (the
        # instance is not on the destination yet; its migration is).
        try:
            for compute in (self.src, self.dest):
                compute.driver._vgpu_ext().allocator.orphan_grace = 0
            # The vGPU work of the periodic task (what this driver adds to
            # get_available_resource), twice on each host. Not Nova's whole
            # periodic task: run from this live-migration thread in Nova's
            # harness, its own database reads wait on the harness's cell
            # lock behind a writer that waits for this thread (a deadlock
            # seen in native-threads CI runs).
            for _ in range(2):
                for compute in (self.src, self.dest):
                    compute.driver._reconcile_devices(periodic=True)
            self.mid_flight = {'dest': list(self.ledger(self.dest).values()),
                               'src': list(self.ledger(self.src).values())}
            # The audit of ownership agrees mid-flight: the migration holds
            # the source's allocations and devices, the instance the
            # destination's.
            self.audit_mid_flight = {
                name: self.audit(name) for name in ('src', 'dest')}
        finally:
            # The job fails whatever happened above: a stub that raised
            # would leave Nova's migration monitor waiting for ever, and the
            # test hanging in its clean-up. Assertions come after.
            conn = self.src.driver._host.get_connection()
            conn.lookupByUUIDString(self.server['id']).fail_job()
            self.migrate_stub_ran = True

    def test_destination_frees_what_it_claimed(self):
        self.server = self._create_server(
            image_uuid=IMAGE, flavor_id=self.flavor, networks='none',
            host='src', expected_state='ACTIVE')
        before = self.ledger(self.src)
        # The stub's findings, if it gets there.
        self.mid_flight = self.audit_mid_flight = None
        self._live_migrate(self.server, 'failed')
        self.assertTrue(self.migrate_stub_ran)
        (migration,) = [m['uuid'] for m in self.api.get_migrations()
                        if m['migration_type'] == 'live-migration']
        self.assertEqual({'dest': [self.server['id']],
                          'src': [migration]}, self.mid_flight)
        self.assertEqual({'src': [], 'dest': []}, self.audit_mid_flight)
        self.assertEqual('src', self.api.get_server(
            self.server['id'])['OS-EXT-SRV-ATTR:host'])
        self.assertEqual(before, self.ledger(self.src))
        self.assertEqual(list(before), self.guest_devices(self.src,
                                                          self.server))
        self.assertEqual({}, self.ledger(self.dest))
        self.assertEqual(self.baseline['dest'], self.device_ids(self.dest))


class VfioMigration:
    """The same through Nova's PCI path: a VF of NVIDIA's vendor VFIO."""

    profile = 'l40s-vfio'
    enabled_types = 'nvidia-1150'
    # Nova's minimums for a VFIO variant driver's live migration.
    versions = {'src': (10000000, 8002002), 'dest': (10000000, 8002002)}

    def vf_type(self, compute, vf: str) -> int:
        path = os.path.join(compute.driver._vgpu_ext().backend.root, 'sys',
                            'bus', 'pci', 'devices', vf, 'nvidia',
                            'current_vgpu_type')
        with open(path) as f:
            return int(f.read())


class TestLiveMigrationVfio(VfioMigration, LiveMigrationBase):

    def configure(self):
        # One GPU serves, so that the two servers below meet on it.
        self.device_addresses('nvidia-1150', '0000:c1:00.0')

    def test_live_migration_moves_the_vgpu(self):
        # A server on the destination first: the VF the source uses is
        # taken there, so the migrated XML must be rewritten to another.
        other = self._create_server(
            image_uuid=IMAGE, flavor_id=self.flavor, networks='none',
            host='dest', expected_state='ACTIVE')
        self.server = self._create_server(
            image_uuid=IMAGE, flavor_id=self.flavor, networks='none',
            host='src', expected_state='ACTIVE')
        (source,) = self.ledger(self.src)
        self.assertEqual({source: other['id']}, self.ledger(self.dest))
        self.assertEqual(1150, self.vf_type(self.src, source))
        self._live_migrate(self.server, 'completed')
        self.assertEqual('dest', self.api.get_server(
            self.server['id'])['OS-EXT-SRV-ATTR:host'])
        (device,) = [d for d, owner in self.ledger(self.dest).items()
                     if owner == self.server['id']]
        self.assertNotEqual(source, device)
        # The migrated domain has the destination's VF, typed, as NVIDIA's
        # variant driver needs it (managed='no').
        self.assertEqual([device], self.guest_devices(self.dest,
                                                      self.server))
        (hostdev,) = lxml_etree.fromstring(self.guest_xml(
            self.dest, self.server).encode()).iter('hostdev')
        self.assertEqual(('pci', 'no'), (hostdev.get('type'),
                                         hostdev.get('managed')))
        self.assertEqual(1150, self.vf_type(self.dest, device))
        # The source's VF is free again, its ledger empty.
        self.assertEqual(0, self.vf_type(self.src, source))
        self.assertEqual({}, self.ledger(self.src))
        self.assertEqual({'src': 0, 'dest': 2},
                         {h: self.usage(h) for h in ('src', 'dest')})


class TestLiveMigrationVfioFails(VfioMigration, TestLiveMigrationFails):
    pass


class RefusedBase(LiveMigrationBase):
    """The pre-checks refuse: nothing moves, nothing is claimed."""

    def assertRefused(self, *fragments):
        self.server = self._create_server(
            image_uuid=IMAGE, flavor_id=self.flavor, networks='none',
            host='src', expected_state='ACTIVE')
        before = self.ledger(self.src)
        # A pre-check refuses; Nova's conductor then finds no valid host
        # and the API answers with its own error.
        self.assertRaises(
            client.OpenStackApiException, self.api.post_server_action,
            self.server['id'], {'os-migrateLive': {
                'host': 'dest', 'block_migration': 'auto'}})
        for fragment in fragments:
            self.assertIn(fragment, self.stdlog.logger.output)
        server = self._wait_for_state_change(self.server, 'ACTIVE')
        self.assertEqual('src', server['OS-EXT-SRV-ATTR:host'])
        self.assertEqual(before, self.ledger(self.src))
        self.assertEqual({}, self.ledger(self.dest))
        self.assertEqual(self.baseline['dest'], self.device_ids(self.dest))
        self.assertFalse(self.migrate_stub_ran)


class VfioRefusedBase(VfioMigration, RefusedBase):
    pass


class ManagerFacts:
    """Each host's NVML says its vGPU manager version and ECC modes."""

    facts = {'src': ('550.90.07', True), 'dest': ('550.90.07', True)}

    def configure(self):
        super().configure()
        for host, (version, ecc) in self.facts.items():
            # The simulated host nova-compute keeps beside its ledger,
            # before it starts (its NVML reads these).
            root = os.path.join(self.state, host, 'simulated-host')
            addresses = [g.address for g in simulated.load_profile(
                self.profile).gpus]
            simulated_manager.set_host(root, version, {
                address: ecc for address in addresses})

    def traits(self, host):
        return {t for rp in self.placement.get(
            '/resource_providers', version='1.14').body['resource_providers']
            if rp['name'].startswith(host + '_pci_')
            for t in self.placement.get(
                '/resource_providers/%s/traits' % rp['uuid'],
                version='1.6').body['traits']}


class TestLiveMigrationSameManager(ManagerFacts, LiveMigrationBase):

    def test_same_version_and_ecc_migrates(self):
        for host in ('src', 'dest'):
            self.assertLessEqual({'CUSTOM_VGPU_MANAGER_550_90_07',
                                  'CUSTOM_VGPU_ECC_ON'}, self.traits(host))
        self.server = self._create_server(
            image_uuid=IMAGE, flavor_id=self.flavor, networks='none',
            host='src', expected_state='ACTIVE')
        self._live_migrate(self.server, 'completed')
        self.assertEqual('dest', self.api.get_server(
            self.server['id'])['OS-EXT-SRV-ATTR:host'])
        self.assertEqual([self.server['id']],
                         list(self.ledger(self.dest).values()))


class TestLiveMigrationOtherManager(ManagerFacts, RefusedBase):

    facts = {'src': ('550.90.07', True), 'dest': ('570.133.10', True)}

    def test_refused_naming_both_versions(self):
        self.assertRefused(
            'same vGPU manager version and ECC setting',
            'vGPU manager version 550.90.07 on the source host (src), '
            '570.133.10 on this host (dest)',
            'CUSTOM_VGPU_MANAGER_550_90_07')


class TestLiveMigrationOtherEcc(ManagerFacts, RefusedBase):

    facts = {'src': ('550.90.07', True), 'dest': ('550.90.07', False)}

    def test_refused_naming_both_settings(self):
        self.assertRefused('ECC setting on on the source host (src), off '
                           'on this host (dest)')


class TestLiveMigrationVfioOtherManager(ManagerFacts, VfioRefusedBase):

    facts = {'src': ('580.82.07', True), 'dest': ('580.95.05', True)}

    def test_refused_naming_both_versions(self):
        self.assertRefused('vGPU manager version 580.82.07 on the source '
                           'host (src), 580.95.05 on this host (dest)')


class TestLiveMigrationVfioOldDestination(VfioRefusedBase):

    # Nova's conductor itself refuses a destination with an older QEMU (its
    # hypervisor version); an older libvirt reaches this driver's check.
    versions = {'src': (10000000, 8002002), 'dest': (9010000, 8002002)}

    def test_refused_naming_the_destination(self):
        self.assertRefused('needs libvirt >= 10.0.0 and QEMU >= 8.2.2',
                           'the destination host (dest)')


class TestLiveMigrationVfioOldSource(VfioRefusedBase):

    versions = {'src': (10000000, 8001000), 'dest': (10000000, 8002002)}

    def test_refused_naming_the_source(self):
        self.assertRefused('needs libvirt >= 10.0.0 and QEMU >= 8.2.2',
                           'the source host (src)')


class TestLiveMigrationPostCopy(VfioRefusedBase):

    def setUp(self):
        super().setUp()
        self.flags(live_migration_permit_post_copy=True, group='libvirt')

    def test_refused_naming_the_option(self):
        self.assertRefused('cannot be live migrated in post-copy mode',
                           'live_migration_permit_post_copy = False')


class TestReshapeFromNovaLayout(DriverTestBase):
    """Nova's older vGPU layouts reshaped at start-up.

    Placement is made to look as Nova's in-tree support left it (VGPU on the
    compute node as before Stein, or a provider per SR-IOV VF), with a
    server's vGPU allocated there; a restart reshapes it onto the GPU's
    provider through Nova's own ReshapeNeeded path.
    """

    profile = 'a100-sriov'
    enabled_types = 'nvidia-471'

    def setUp(self):
        super().setUp()
        self.compute = self.start_vgpu_compute('host1')
        self.flavor = self.small_vgpu_flavor()
        self.server = self._create_server(
            image_uuid=IMAGE, flavor_id=self.flavor, networks='none',
            expected_state='ACTIVE')
        (self.device,) = [d for d in self.host_devices(self.compute)
                          if d.device_id in self.devices_in_guest()]
        gpu = self.compute.driver._vgpu_ext().backend.scan().gpu_of_parent(
            self.device.parent)
        self.gpu_rp = inventory.provider_uuid('host1_' + gpu.name)
        self.root = self.compute_rp_uuids['host1']

    def devices_in_guest(self):
        return self.guest_devices(self.compute, self.server)

    def allocations(self):
        return self.placement.get('/allocations/%s' % self.server['id'],
                                  version='1.28').body

    def move_vgpu_to(self, old_rp):
        """The server's vGPU onto ``old_rp``, the GPU provider gone."""
        current = self.allocations()
        moved = {rp: a['resources'] for rp, a in
                 current['allocations'].items()}
        vgpu = moved.pop(self.gpu_rp)
        moved.setdefault(old_rp, {}).update(vgpu)
        self.placement.put('/allocations/%s' % self.server['id'], {
            'allocations': {rp: {'resources': r} for rp, r in moved.items()},
            'project_id': current['project_id'],
            'user_id': current['user_id'],
            'consumer_generation': current['consumer_generation']},
            version='1.28')
        self.assertEqual(204, self.placement.delete(
            '/resource_providers/%s' % self.gpu_rp, version='1.20').status)

    def assert_reshaped(self):
        after = self.allocations()['allocations']
        self.assertEqual({'VGPU': 1}, after[self.gpu_rp]['resources'])
        self.assertEqual(self.device.device_id, [
            d.device_id for d in self.host_devices(self.compute)
            if d.parent == self.device.parent][0])
        self.assertEqual([self.device.device_id], self.devices_in_guest())
        self._wait_for_state_change(self.server, 'ACTIVE')
        return after

    def test_per_vf_providers_reshaped_onto_the_gpu(self):
        vf_rp = self.placement.post('/resource_providers', {
            'name': 'host1_' + self.device.parent,
            'parent_provider_uuid': self.root},
            version='1.20').body['uuid']
        self.placement.put('/resource_providers/%s/inventories' % vf_rp, {
            'resource_provider_generation': 0,
            'inventories': {'VGPU': {'total': 1}}}, version='1.20')
        self.move_vgpu_to(vf_rp)

        self.compute = self.restart_compute_service('host1')

        self.assertNotIn(vf_rp, self.assert_reshaped())
        self.assertEqual(404, self.placement.get(
            '/resource_providers/%s' % vf_rp, version='1.20').status)

    def test_vgpu_on_the_compute_node_reshaped_onto_the_gpu(self):
        body = self.placement.get(
            '/resource_providers/%s/inventories' % self.root,
            version='1.20').body
        inventories = dict(body['inventories'])
        inventories['VGPU'] = {'total': 64}
        self.placement.put('/resource_providers/%s/inventories' % self.root, {
            'resource_provider_generation':
                body['resource_provider_generation'],
            'inventories': inventories}, version='1.20')
        self.move_vgpu_to(self.root)
        self.assertEqual(1, self._get_provider_usages(self.root)['VGPU'])

        self.compute = self.restart_compute_service('host1')

        after = self.assert_reshaped()
        self.assertNotIn('VGPU', after[self.root]['resources'])
        self.assertIn('VCPU', after[self.root]['resources'])
        self.assertNotIn('VGPU', self._get_provider_inventory(self.root))


class TestCompat(timeout.TestCase):

    def test_every_overridden_private_method_is_checked_at_start(self):
        # A private method of Nova's driver that this driver overrides but
        # compat does not check would fail silently on another Nova.
        overridden = {
            name for name in vars(vgpu_driver.LibvirtVGPUDriver)
            if name.startswith('_') and not name.startswith('__') and
            hasattr(libvirt_driver.LibvirtDriver, name)}
        self.assertEqual(overridden, set(compat.PRIVATE_METHODS))


class TestSwitchFromNovaInTreeSupport(DriverTestBase):
    """A host on Nova's own libvirt driver, with vGPU servers, switched.

    Phase one runs Nova's in-tree vGPU support unchanged: its mdevs are
    written to a simulated sysfs that the GPUs of Nova's fake libvirt are
    laid out in (two mdev-capable GPUs at 0000:81:00.0 and 0000:81:01.0,
    nvidia-11). Phase two restarts the compute service with this driver on
    the same host, the same guests and the same Placement.
    """

    enabled_types = 'nvidia-11'

    def setUp(self):
        super().setUp()
        profile = yaml.safe_load(resources.files(
            'vgpu_nova_ext.host.profiles').joinpath('m60.yaml').read_text())
        profile['gpus'] = [
            {'address': address, 'model': 'tesla-m60',
             'sysfs_path': 'pci0000:80/0000:80:01.0/' + address}
            for address in ('0000:81:00.0', '0000:81:01.0')]
        path = os.path.join(self.state, 'host1.yaml')
        with open(path, 'w') as f:
            yaml.safe_dump(profile, f)
        self.flags(simulated_profile=path, group='vgpu_nova_ext')
        self.kernel = simulated.SimulatedBackend(
            profile=path,
            root=os.path.join(self.state, 'host1', 'simulated-host'))
        self.useFixture(fixtures.MockPatch(
            'nova.virt.libvirt.driver.LibvirtDriver._create_mdev',
            side_effect=self._create_mdev))
        self.flavor = self.small_vgpu_flavor()

    def _setup_compute_service(self):
        self.flags(compute_driver='libvirt.LibvirtDriver')

    def _create_mdev(self, dev_name, mdev_type, uuid=None):
        # Nova's in-tree code writes the create file of its sysfs (through
        # privsep); here the write lands in the simulated host, and libvirt
        # (the fake) learns of the new node device, as udev would tell it.
        fakelibvirt = fake_libvirt.load()
        uuid = uuid or uuidutils.generate_uuid()
        self.kernel.create_device(dev_name, mdev_type, uuid)
        name = 'mdev_' + uuid.replace('-', '_')
        self.computes['host1'].driver._host.get_connection().mdev_info.\
            devices[name] = fakelibvirt.FakeMdevDevice(
                dev_name=name, type_id=mdev_type, parent=dev_name)
        return uuid

    def resources(self, server):
        return {rp: a['resources'] for rp, a in
                self._get_allocations_by_server_uuid(server['id']).items()}

    def test_switch_keeps_every_server_its_vgpu(self):
        fakelibvirt = fake_libvirt.load()
        self.start_compute(
            hostname='host1', pci_info=fakelibvirt.HostPCIDevicesInfo(
                num_pci=0, num_pfs=0, num_vfs=0, num_mdevcap=2))
        compute = self.computes['host1']
        self.assertNotIsInstance(compute.driver, self._our_driver())
        servers = [self._create_server(
            image_uuid=IMAGE, flavor_id=self.flavor, networks='none',
            expected_state='ACTIVE') for _ in range(3)]
        # Nova keeps the mdev of a deleted server, for its next one.
        self._delete_server(servers.pop())
        devices = {s['id']: self.guest_devices(compute, s) for s in servers}
        allocations = {s['id']: self.resources(s) for s in servers}
        on_host = {d.device_id for d in self.kernel.scan().mediated_devices}
        self.assertEqual(3, len(on_host))
        (left,) = on_host - {d for ds in devices.values() for d in ds}
        gpu_rps = {self._get_provider_uuid_by_name('host1_' + g) for g in (
            'pci_0000_81_00_0', 'pci_0000_81_01_0')}

        self.flags(compute_driver='vgpu_nova_ext_driver.LibvirtVGPUDriver')
        compute = self.restart_compute_service('host1')
        self.assertIsInstance(compute.driver, self._our_driver())

        # Same providers (adopted by name, UUIDs kept), now with traits;
        # same allocations; the same device in every guest, now in the
        # ledger as the server's; Nova's leftover a free device.
        self.assertEqual(gpu_rps, {self._get_provider_uuid_by_name(
            'host1_' + g) for g in ('pci_0000_81_00_0', 'pci_0000_81_01_0')})
        for rp in gpu_rps:
            self.assertIn('CUSTOM_VGPU_M60_0B', self._get_provider_traits(rp))
        ledger = compute.driver._vgpu_ext().ledger
        for server in servers:
            self._wait_for_state_change(server, 'ACTIVE')
            self.assertEqual(allocations[server['id']],
                             self.resources(server))
            self.assertEqual(devices[server['id']],
                             self.guest_devices(compute, server))
            self.assertEqual(devices[server['id']], [
                e.device_id for e in ledger.of_consumer(server['id'])])
        self.assertIsNone(ledger.get(left).consumer)

        # Life goes on under this driver: a reboot keeps the device, a new
        # server reuses what Nova left, a delete frees a device for good.
        self._reboot_server(servers[0], hard=True)
        self.assertEqual(devices[servers[0]['id']],
                         self.guest_devices(compute, servers[0]))
        new = self._create_server(
            image_uuid=IMAGE, flavor_id=self.flavor, networks='none',
            expected_state='ACTIVE')
        self.assertEqual([left], self.guest_devices(compute, new))
        self._delete_server(servers[1])
        self.assertEqual(on_host - set(devices[servers[1]['id']]), {
            d.device_id for d in self.kernel.scan().mediated_devices})

    @staticmethod
    def _our_driver():
        return vgpu_driver.LibvirtVGPUDriver
