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
"""What one libvirt node-device call costs against a real libvirtd.

``benchmarks/periodic.py`` runs Nova's in-tree vGPU periodic work on Nova's
fake libvirt, which answers in-process; on a host each of its calls (a
``nodeDeviceLookupByName`` and an ``XMLDesc`` per node device: 274 at 8
GPUs / 128 guests, 22 at 2 GPUs / 8 guests) is a round trip to libvirtd.
This starts a private libvirtd (Debian's ``libvirt-daemon-system``; no
systemd: its own configuration, PID file and UNIX socket in a temporary
directory, stopped at the end), and times those two calls on a PCI node
device of this machine, and the one call this driver's quiet periodic task
makes (``listAllDomains``), over the socket.

Not part of ``.ci/run`` (it needs root and libvirtd); run by hand:
``sudo python benchmarks/libvirtd_roundtrip.py`` in an environment with
libvirt-python. Prints medians, and Nova's task on a real host as its
in-process time plus its calls times the round trip.
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

CONF = """unix_sock_dir = "%(dir)s"
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
listen_tls = 0
listen_tcp = 0
"""


def start(directory: str, libvirtd: str) -> subprocess.Popen:
    conf = os.path.join(directory, 'libvirtd.conf')
    with open(conf, 'w') as f:
        f.write(CONF % {'dir': directory})
    process = subprocess.Popen(
        [libvirtd, '--config', conf, '--pid-file',
         os.path.join(directory, 'libvirtd.pid')],
        stdout=subprocess.DEVNULL, stderr=open(
            os.path.join(directory, 'libvirtd.log'), 'w'))
    socket = os.path.join(directory, 'libvirt-sock')
    deadline = time.monotonic() + 30
    while not os.path.exists(socket):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            with open(os.path.join(directory, 'libvirtd.log')) as f:
                raise SystemExit('libvirtd did not start: %s' % f.read())
        time.sleep(0.05)
    return process


def timed(call, samples: int) -> list[float]:
    out = []
    for _ in range(samples):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--samples', type=int, default=2000)
    parser.add_argument('--libvirtd', default=shutil.which(
        'libvirtd', path='/usr/sbin:/usr/bin:' + os.environ['PATH']))
    parser.add_argument(
        '--nova-ms', type=float, nargs=2, metavar=('AT_8', 'AT_2'),
        help='Nova\'s in-process medians from benchmarks/periodic.py (ms) '
             'at 8 GPUs / 128 guests and 2 GPUs / 8 guests')
    parser.add_argument(
        '--ours-ms', type=float, nargs=2, metavar=('AT_8', 'AT_2'),
        help='this driver\'s quiet-task medians from the same run (ms)')
    parser.add_argument(
        '--ours-full-ms', type=float, nargs=2, metavar=('AT_8', 'AT_2'),
        help='this driver\'s full-reconcile medians from the same run (ms)')
    args = parser.parse_args()
    import libvirt

    with tempfile.TemporaryDirectory(prefix='libvirtd-') as directory:
        daemon = start(directory, args.libvirtd)
        try:
            uri = 'qemu:///system?socket=%s' % os.path.join(
                directory, 'libvirt-sock')
            conn = libvirt.open(uri)
            devices = conn.listAllDevices(
                libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV)
            if not devices:
                raise SystemExit('libvirtd\'s node-device driver lists no '
                                 'PCI device here')
            name = devices[0].name()
            lookup = timed(lambda: conn.nodeDeviceLookupByName(name),
                           args.samples)
            device = conn.nodeDeviceLookupByName(name)
            xml = timed(lambda: device.XMLDesc(0), args.samples)
            both = timed(lambda: conn.nodeDeviceLookupByName(name).XMLDesc(
                0), args.samples)
            domains = timed(lambda: conn.listAllDomains(3), args.samples)
            version = conn.getLibVersion()
            conn.close()
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
    pair = statistics.median(both)
    print('libvirtd %d.%d.%d over its UNIX socket, %d samples each, on %s '
          '(one of %d PCI node devices):' % (
              version // 1000000, version // 1000 % 1000, version % 1000,
              args.samples, name, len(devices)))
    for label, times in (('nodeDeviceLookupByName', lookup),
                         ('XMLDesc', xml),
                         ('lookup + XMLDesc', both),
                         ('listAllDomains', domains)):
        print('  %-24s median %7.1f us   p90 %7.1f us' % (
            label, statistics.median(times) * 1e6,
            sorted(times)[int(0.9 * (len(times) - 1))] * 1e6))
    for (gpus, calls, ours_calls), nova_ms, ours_ms, full_ms in zip(
            ((8, 274, 1), (2, 22, 1)), args.nova_ms or (None, None),
            args.ours_ms or (None, None), args.ours_full_ms or (None, None)):
        round_trips = calls / 2 * pair * 1e3
        line = '  %d GPUs: Nova\'s %d calls cost %.2f ms in round trips' % (
            gpus, calls, round_trips)
        if nova_ms is not None:
            line += ' (task: %.2f ms in-process + that = %.2f ms)' % (
                nova_ms, nova_ms + round_trips)
        ours = ours_calls * statistics.median(domains) * 1e3
        line += '; this driver\'s %d call %.3f ms' % (ours_calls, ours)
        if ours_ms is not None:
            line += ' (task: %.2f ms)' % (ours_ms + ours)
            if nova_ms is not None:
                line += ', ratio %.3fx' % (
                    (ours_ms + ours) / (nova_ms + round_trips))
        if full_ms is not None and nova_ms is not None:
            line += '; a full reconcile %.2f ms, ratio %.3fx' % (
                full_ms + ours, (full_ms + ours) / (nova_ms + round_trips))
        print(line)
    return 0


if __name__ == '__main__':
    sys.exit(main())
