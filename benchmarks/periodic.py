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
"""The vGPU part of nova-compute's periodic task, next to Nova's own.

One host, built twice the same way from one profile: GPUs of a Tesla M60
at the addresses of Nova's fake libvirt (0000:81:NN.0, nvidia-11, 16 per
GPU), every GPU filled with running guests, each holding one mdev that
exists in the simulated kernel's sysfs and as a node device of Nova's fake
libvirt (``nova/tests/fixtures/libvirt.py`` from the nova wheel).

- Nova's in-tree libvirt driver (nova 34): its vGPU periodic work,
  ``_update_provider_tree_for_vgpu`` (counts mdevs and mdev-capable
  devices through libvirt's node-device API, updates the GPU providers).
- vgpu-nova-ext's driver through its ``libvirt`` backend: its
  ``_update_provider_tree_for_vgpu`` (scans the host, plans types and
  providers) plus the reconcile that ``get_available_resource`` runs
  (every domain's XML, the ledger, the host).

Both run in one process, alternately, on the same Nova configuration,
in the resource tracker's order (get_available_resource, then
update_provider_tree); the figures are medians of each, and their ratio
(the aim: at most 1.0). This driver is measured twice: a task in which
nothing changed since the last full reconcile (most tasks: see
``vgpu_nova_ext/devices/quiet.py``), and a full one (the first after a
change, and one per ``full_reconcile_interval``); the mix of the two at
Nova's task interval is printed too. Both sizes of the issue run in one
run (8 GPUs / 128 guests, 2 GPUs / 8 guests).

Nova's fake libvirt answers in-process, so the times leave out what a
real host adds: each libvirt call is a round trip to libvirtd. The calls
each driver makes per task are counted and printed (Nova: a lookup and an
XMLDesc per node device; this driver: one listing of the domains, whose
XML it reads only when the host holds a device its ledger does not know).

Run (in the nova-functional environment, e.g. ``tox -e bench``):
python benchmarks/periodic.py [--gpus N --guests-per-gpu M] [--samples S]

On a real host each libvirt call is a round trip to libvirtd:
``benchmarks/libvirtd_roundtrip.py`` measures one (kept out of CI).
"""

import argparse
import contextlib
from importlib import resources
import os
import statistics
import sys
import tempfile
import time
import uuid

#: nova-compute's default mode in Nova 34: native threads, no eventlet;
#: chosen before anything imports eventlet, as nova-compute does.
os.environ.setdefault('OS_NOVA_DISABLE_EVENTLET_PATCHING', '1')
from nova import monkey_patch  # noqa: E402
monkey_patch.patch()

import yaml  # noqa: E402

GUEST_XML = """<domain type='kvm'>
  <name>instance-%(index)08x</name>
  <uuid>%(uuid)s</uuid>
  <memory>131072</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <hostdev mode='subsystem' type='mdev' model='vfio-pci'>
      <source><address uuid='%(mdev)s'/></source>
    </hostdev>
  </devices>
</domain>"""


def _profile(gpus: int) -> str:
    """The M60 profile with its GPUs where Nova's fake libvirt has them."""
    profile = yaml.safe_load(resources.files(
        'vgpu_nova_ext.host.profiles').joinpath('m60.yaml').read_text())
    profile['gpus'] = [
        {'address': '0000:81:%02x.0' % slot, 'model': 'tesla-m60',
         'sysfs_path': 'pci0000:80/0000:80:01.0/0000:81:%02x.0' % slot}
        for slot in range(gpus)]
    return yaml.safe_dump(profile)


class Host:
    """The simulated kernel and Nova's fake libvirt, filled alike."""

    def __init__(self, directory: str, gpus: int, per_gpu: int) -> None:
        from nova.tests.fixtures import libvirt as fakelibvirt

        from vgpu_nova_ext.host import simulated

        path = os.path.join(directory, 'profile.yaml')
        with open(path, 'w') as f:
            f.write(_profile(gpus))
        self.kernel = simulated.SimulatedBackend(
            profile=path, root=os.path.join(directory, 'host'))
        self.conn = fakelibvirt.Connection(
            'qemu:///system', False,
            pci_info=fakelibvirt.HostPCIDevicesInfo(
                num_pci=0, num_pfs=0, num_vfs=0, num_mdevcap=gpus),
            mdev_info=fakelibvirt.HostMdevDevicesInfo(devices={}),
            hostname='host1')
        index = 0
        for slot in range(gpus):
            parent = 'pci_0000_81_%02x_0' % slot
            for _ in range(per_gpu):
                mdev = str(uuid.uuid4())
                self.kernel.create_device(parent, 'nvidia-11', mdev)
                name = 'mdev_%s_%s' % (mdev.replace('-', '_'),
                                       parent[len('pci_'):])
                self.conn.mdev_info.devices[name] = \
                    fakelibvirt.FakeMdevDevice(
                        dev_name=name, type_id='nvidia-11', parent=parent)
                index += 1
                domain = self.conn.defineXML(GUEST_XML % {
                    'index': index, 'uuid': str(uuid.uuid4()),
                    'mdev': mdev})
                domain.create()
        self.guests = index

    def close(self) -> None:
        self.kernel.close()


#: Answered by libvirt's client library from the object it holds (the
#: domain's UUID, name and id come with it): no round trip to libvirtd.
CLIENT_SIDE = frozenset({'UUIDString', 'UUID', 'name', 'ID'})


class CallCounter:
    """Counts the libvirt API calls made through a connection.

    Wraps the connection and the objects it hands out (node devices,
    domains); behaviour is the fake's own. On a real host each call is a
    round trip to libvirtd.
    """

    def __init__(self, target, counts=None) -> None:
        self._target = target
        self._counts = counts if counts is not None else {'calls': 0}

    def __getattr__(self, name):
        value = getattr(self._target, name)
        if not callable(value) or name.startswith('_'):
            return value
        counts = self._counts

        def call(*args, **kwargs):
            if name not in CLIENT_SIDE:
                counts['calls'] += 1
            return self._wrap(value(*args, **kwargs))
        return call

    def _wrap(self, value):
        if isinstance(value, list):
            return [self._wrap(v) for v in value]
        if type(value).__module__.endswith('fixtures.libvirt'):
            return CallCounter(value, self._counts)
        return value


@contextlib.contextmanager
def nova_drivers(directory: str, host: Host):
    """Nova's libvirt driver and this project's, both on ``host``."""
    from nova.virt.libvirt import driver as libvirt_driver

    from tests.nova import standalone
    from vgpu_nova_ext.nova import driver as vgpu_driver

    standalone.configure(
        DEFAULT={'host': 'host1'},
        devices={'enabled_mdev_types': ['nvidia-11']},
        vgpu_nova_ext={'host_backend': 'libvirt',
                       'sysfs_root': host.kernel.root,
                       'state_path': os.path.join(directory, 'state')})
    with standalone.fake_libvirt():
        drivers = {}
        for name, cls in (('nova', libvirt_driver.LibvirtDriver),
                          ('vgpu-nova-ext', vgpu_driver.LibvirtVGPUDriver)):
            # Each driver on the same host, through its own counter.
            counter = CallCounter(host.conn)
            driver = standalone.driver(cls, counter)
            driver.libvirt_calls = counter._counts
            drivers[name] = (driver, standalone.tree('host1',
                                                     str(uuid.uuid4())))
        ours = drivers['vgpu-nova-ext'][0]
        # As at init_host: the guests' devices are adopted into the ledger.
        ours._reconcile_devices()
        yield drivers
        ours._vgpu_ext().devices.close()


def periodic(name: str, driver, tree) -> None:
    """One periodic task's vGPU work.

    In the resource tracker's order: get_available_resource, then
    update_provider_tree.
    """
    if name == 'vgpu-nova-ext':
        driver._reconcile_devices(periodic=True)
    driver._update_provider_tree_for_vgpu(tree, 'host1')


def check_agree(drivers) -> None:
    """Both drivers see the same GPUs and the same vGPUs in use."""
    nova_tree = drivers['nova'][1]
    ours, our_tree = drivers['vgpu-nova-ext']
    gpus = {}
    for name, tree in (('nova', nova_tree), ('vgpu-nova-ext', our_tree)):
        gpus[name] = sorted(
            tree.data(u).name for u in tree.get_provider_uuids('host1')
            if tree.data(u).parent_uuid is not None)
    if gpus['nova'] != gpus['vgpu-nova-ext'] or not gpus['nova']:
        raise SystemExit('the drivers do not see the same GPUs: %s' % gpus)
    held = [e for e in ours._vgpu_ext().ledger.all() if e.consumer]
    return len(gpus['nova']), len(held)


#: Sizes run by default, in one run: (GPUs, guests per GPU).
SIZES = ((8, 16), (2, 4))

#: Nova's periodic task interval (update_resources_interval 0: every
#: periodic tick, 60 s) and this driver's full_reconcile_interval default.
TASK_SECONDS = 60
FULL_SECONDS = 300


def measure(gpus: int, per_gpu: int, samples: int) -> dict:
    """Medians (seconds) of each driver's task on one host, and calls."""
    with tempfile.TemporaryDirectory() as directory:
        host = Host(directory, gpus, per_gpu)
        try:
            with nova_drivers(directory, host) as drivers:
                ours = drivers['vgpu-nova-ext'][0]
                quiet = ours._vgpu_ext().quiet
                # Ours twice: a quiet task (nothing changed since the
                # last full reconcile) and a full one (as every task with
                # full_reconcile_interval = 0, and as a task after a
                # change).
                runs = {'nova': (drivers['nova'], None),
                        'vgpu-nova-ext': (drivers['vgpu-nova-ext'],
                                          quiet.interval),
                        'vgpu-nova-ext full': (drivers['vgpu-nova-ext'], 0)}
                calls = {}
                for name, ((driver, tree), interval) in runs.items():
                    label = name.split()[0]
                    if interval is not None:
                        quiet.interval = interval
                    periodic(label, driver, tree)      # warm up
                    before = driver.libvirt_calls['calls']
                    periodic(label, driver, tree)
                    calls[name] = driver.libvirt_calls['calls'] - before
                gpus_seen, held = check_agree(drivers)
                times: dict[str, list[float]] = {n: [] for n in runs}
                for _ in range(samples):
                    for name, ((driver, tree), interval) in runs.items():
                        if interval is not None:
                            quiet.interval = interval
                            # A full pass runs before the quiet one (the
                            # last one settled the task), unmeasured.
                            if interval:
                                periodic('vgpu-nova-ext', driver, tree)
                        start = time.perf_counter()
                        periodic(name.split()[0], driver, tree)
                        times[name].append(time.perf_counter() - start)
        finally:
            host.close()
    return {'gpus': gpus_seen, 'guests': host.guests, 'held': held,
            'times': times, 'calls': calls}


def report(samples: int, result: dict) -> dict[str, float]:
    times = result['times']
    medians = {n: statistics.median(t) for n, t in times.items()}
    print('vGPU periodic work, %d samples each: %d GPUs, %d running guests '
          'with one mdev each (%d in vgpu-nova-ext\'s ledger)' % (
              samples, result['gpus'], result['guests'], result['held']))
    for name, median in medians.items():
        print('  %-19s median %8.3f ms   p90 %8.3f ms   libvirt calls %d' % (
            name, median * 1e3, sorted(times[name])[
                int(0.9 * (len(times[name]) - 1))] * 1e3,
            result['calls'][name]))
    per_full = FULL_SECONDS // TASK_SECONDS
    amortized = ((per_full - 1) * medians['vgpu-nova-ext'] +
                 medians['vgpu-nova-ext full']) / per_full
    ratios = {
        'quiet': medians['vgpu-nova-ext'] / medians['nova'],
        'full': medians['vgpu-nova-ext full'] / medians['nova'],
        'amortized': amortized / medians['nova'],
    }
    print('  vgpu-nova-ext / nova: %.2fx a task in which nothing changed '
          '(aim: at most 1.0x); %.2fx a full reconcile; %.2fx over %d '
          'tasks (%d s apart, one full reconcile per %d s)' % (
              ratios['quiet'], ratios['full'], ratios['amortized'],
              per_full, TASK_SECONDS, FULL_SECONDS))
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--gpus', type=int,
                        help='one size only: this many GPUs')
    parser.add_argument('--guests-per-gpu', type=int, default=16)
    parser.add_argument('--samples', type=int, default=30)
    args = parser.parse_args()
    sizes = ((args.gpus, args.guests_per_gpu),) if args.gpus else SIZES
    worst = 0.0
    for gpus, per_gpu in sizes:
        ratios = report(args.samples, measure(gpus, per_gpu, args.samples))
        worst = max(worst, ratios['quiet'])
    print('worst quiet-task ratio over the sizes: %.2fx' % worst)
    return 0


if __name__ == '__main__':
    sys.path.insert(0, os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    sys.exit(main())
