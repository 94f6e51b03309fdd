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
"""The kernel of one simulated host, as root: ``sim_kernel.py PROFILE ROOT``.

Lays the host's sysfs out under ROOT (owned by root, so that nova-compute
reads it and writes it only through its privsep daemon, as on a real
host), then carries out what the daemon writes to ``create``, ``remove``
and the VFs' attributes, as the kernel does, until SIGTERM.
"""

import os
import signal
import sys
import threading

from vgpu_nova_ext.host import simulated
from vgpu_nova_ext.host.simulated import kernel
from vgpu_nova_ext.host.simulated import kernel_writes

READY = '.kernel-ready'


def main(profile: str, root: str) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    backend = simulated.SimulatedBackend(profile, root=root)
    print('simulated host %s at %s' % (backend.describe(), root), flush=True)
    # Laid out: nova-compute may read it (the cloud waits for this file).
    open(os.path.join(root, READY), 'w').close()
    with kernel_writes.watching(kernel.SimulatedKernel.at(root),
                                interval=0.05):
        stop.wait()


if __name__ == '__main__':
    main(*sys.argv[1:])
