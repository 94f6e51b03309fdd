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
"""A separate process working on a shared simulated host.

Used by the crash and concurrency tests::

    python -m tests.unit.lifecycle_child DIR PROFILE claim|release \\
        CONSUMER[:GPU,GPU...] ... [--crash POINT:N]
    python -m tests.unit.lifecycle_child DIR PROFILE start [--crash POINT:N]

``start`` does what nova-compute's start does after a host reboot: the
bring-up, the MIG layouts, the plan, the reconcile.

With ``--crash``, the process kills itself with SIGKILL (no clean-up, as
in a power cut or an OOM kill) the Nth time it passes checkpoint POINT.
Prints one JSON line per operation: the devices claimed, or the error.
"""

import json
import os
import signal
import sys

from tests.unit import lifecycle
from vgpu_nova_ext.devices import checkpoints
from vgpu_nova_ext import exception


def main(argv: list[str]) -> None:
    directory, profile, op = argv[:3]
    rest = argv[3:]
    crash = None
    if '--crash' in rest:
        at = rest.index('--crash')
        point, nth = rest[at + 1].rsplit(':', 1)
        crash = (point, int(nth))
        rest = rest[:at] + rest[at + 2:]
    if crash:
        seen = {'n': 0}

        def checkpoint(name):
            if name == crash[0]:
                seen['n'] += 1
                if seen['n'] == crash[1]:
                    os.kill(os.getpid(), signal.SIGKILL)

        checkpoints.reached = checkpoint
    al = lifecycle.build(directory, profile)
    if op == 'start':
        lifecycle.start(al, directory)
        print(json.dumps({'started': True}), flush=True)
        return
    for item in rest:
        consumer, _, gpus = item.partition(':')
        try:
            if op == 'claim':
                claim = al.claim(consumer, lifecycle.alloc(
                    al, *gpus.split(',')))
                out = {'consumer': consumer, 'devices': [
                    d.device_id for d in claim.devices]}
            else:
                out = {'consumer': consumer, 'freed': list(
                    al.release(consumer))}
        except exception.VGPUNovaExtError as exc:
            out = {'consumer': consumer, 'error': type(exc).__name__,
                   'message': str(exc)}
        print(json.dumps(out), flush=True)


if __name__ == '__main__':
    main(sys.argv[1:])
