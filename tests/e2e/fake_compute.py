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
"""nova-compute, unchanged, on Nova's fake libvirt: a process of its own.

Usage (as nova-compute): ``VGPU_E2E_HOST=cn1 VGPU_E2E_DOMAINS=<file>
python fake_compute.py --config-file ...`` (the host name the fake
hypervisor reports; where it lists its domains).

This machine's kernel has no VFIO or mdev support, so a real libvirt
cannot start a guest with a vGPU here (the devstack job with the mtty
sample driver runs real libvirt in OpenStack's gate). Everything else is
nova-compute as deployed: Nova's own ``nova.cmd.compute.main`` with its
configuration files, RabbitMQ, the conductor, Placement behind Keystone,
the unprivileged account, and the privsep daemons it starts through
``sudo nova-rootwrap``. Only what would need a hypervisor is replaced, the
same pieces Nova's own functional tests replace
(``nova/tests/functional/libvirt/base.py``): libvirt-python by the fake
in ``nova/tests/fixtures/libvirt.py``, the image backend, and the host's
CPU, disk and cgroup facts.

The script is copied out of the checkout and imports nothing from it: the
nova account reads only the services' virtualenv and the cloud's files.
"""

import io
import json
import os
import sys
import threading
from unittest import mock


def _fake_hypervisor(hostname: str) -> None:
    import fixtures
    from nova.tests import fixtures as nova_fixtures
    from nova.tests.fixtures import libvirt as fakelibvirt

    def use(fixture):
        fixture.setUp()     # for the life of the process: never cleaned up
        return fixture

    # Nova's fake image backend says every disk exists; the config drive
    # is the one file Nova must really build (genisoimage), as on a host.
    use(nova_fixtures.LibvirtImageBackendFixture(
        exists=lambda name: name != 'disk.config'))
    use(nova_fixtures.CGroupsFixture())
    use(nova_fixtures.LibvirtFixture())
    use(nova_fixtures.OSBrickFixture())
    from nova.virt.libvirt import utils as libvirt_utils

    def create_image(driver, context, instance, *args, **kwargs):
        # The instance's directory, as the real one makes it, for the
        # config drive Nova builds there; an empty root disk in it, which
        # a resize measures and moves (the fake image backend makes none).
        path = libvirt_utils.get_instance_path(instance)
        os.makedirs(path, exist_ok=True)
        open(os.path.join(path, 'disk'), 'ab').close()
        return False, False

    use(fixtures.MonkeyPatch(
        'nova.virt.libvirt.LibvirtDriver._create_image', create_image))
    for target, kwargs in (
            ('nova.virt.libvirt.LibvirtDriver._get_local_gb_info',
             {'return_value': {'total': 128, 'used': 44, 'free': 84}}),
            ('nova.virt.libvirt.driver.libvirt_utils.is_valid_hostname',
             {'return_value': True}),
            ('nova.virt.libvirt.driver.libvirt_utils.file_open',
             {'side_effect': lambda *a, **k: io.BytesIO(b'')}),
            ('nova.privsep.utils.supports_direct_io', {'return_value': True}),
            ('nova.virt.libvirt.host.Host.get_online_cpus',
             {'return_value': set(range(8))})):
        use(fixtures.MockPatch(target, **kwargs))
    connection = fakelibvirt.Connection(
        'qemu:///system', version=fakelibvirt.FAKE_LIBVIRT_VERSION,
        hv_version=fakelibvirt.FAKE_QEMU_VERSION,
        host_info=fakelibvirt.HostInfo(cpu_nodes=1, cpu_sockets=1,
                                       cpu_cores=4, cpu_threads=2,
                                       kB_mem=32 * 1024 * 1024),
        hostname=hostname)
    _publish_domains(connection, os.environ['VGPU_E2E_DOMAINS'])
    mock.patch('nova.virt.libvirt.host.Host.get_connection',
               return_value=connection).start()


def _publish_domains(connection, path: str) -> None:
    """The fake hypervisor's domains in ``path``, after every change.

    They live in this process only; the test reads them here, as it
    would ask a real host's libvirt (virsh list, dumpxml): {instance
    UUID: {"running": bool, "mdevs": [mdev UUID, ...]}}. Every define,
    start, stop and undefine of the fake emits a lifecycle event.
    """
    lock = threading.Lock()
    emit = connection._emit_lifecycle

    def write():
        domains = {}
        for dom in list(connection._vms.values()):
            hostdevs = dom._def['devices'].get('hostdevs', [])
            domains[dom.UUIDString()] = {
                'running': bool(dom.isActive()),
                'mdevs': sorted(h['address_uuid'] for h in hostdevs
                                if h['type'] == 'mdev')}
        with open(path + '.new', 'w') as f:
            json.dump(domains, f)
        os.replace(path + '.new', path)

    def emit_and_publish(*args, **kwargs):
        try:
            return emit(*args, **kwargs)
        finally:
            with lock:
                write()

    connection._emit_lifecycle = emit_and_publish
    write()


def main() -> None:
    # First, as nova-compute's own script: its concurrency mode (native
    # threads unless OS_NOVA_DISABLE_EVENTLET_PATCHING=0) before any import.
    from nova.cmd import compute

    # The name the fake hypervisor reports, as [DEFAULT] host says.
    _fake_hypervisor(os.environ['VGPU_E2E_HOST'])
    sys.argv[0] = 'nova-compute'
    compute.main()


if __name__ == '__main__':
    os.umask(0o022)
    main()
