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
"""Run a piece of a test as an unprivileged account, as nova-compute runs.

The test process (root in CI) forks; the child may prepare what needs root
(oslo.privsep's fork method), then drops to the account, runs the
function and sends its result back as JSON. The child is a fork, so it
needs no access to the checkout or the virtualenv, and nothing else of the
test runner changes user.
"""

import json
import os
import pwd
import select
import signal
import time

#: A child that takes longer is killed and the test fails.
TIMEOUT = 120


def account(test) -> pwd.struct_passwd:
    """The 'nobody' account; skips (fails in CI) when not root."""
    if os.geteuid() != 0:
        message = 'needs root to change user'
        if os.environ.get('VGPU_NOVA_EXT_REQUIRE_SCHEMAS'):
            test.fail(message + ' (CI runs as root)')
        test.skipTest(message)
    return pwd.getpwnam('nobody')


def run_as(test, user: pwd.struct_passwd, func, *args, before_drop=None):
    """``func(*args)`` in a forked child running as ``user``.

    :param before_drop: called in the child while it is still root.
    :returns: what ``func`` returned (JSON-able).
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the test runner
        code = 1
        try:
            os.close(read_end)
            if before_drop is not None:
                before_drop()
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            result = {'uid': os.getuid(), 'result': func(*args)}
            os.write(write_end, json.dumps(result).encode())
            code = 0
        except BaseException as exc:
            os.write(write_end, json.dumps({'crash': repr(exc)}).encode())
        finally:
            os._exit(code)
    os.close(write_end)
    test.addCleanup(os.close, read_end)
    deadline = time.monotonic() + TIMEOUT
    data = b''
    while True:
        ready, _, _ = select.select([read_end], [], [], max(
            0, deadline - time.monotonic()))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            test.fail('the unprivileged child did not finish in %d s'
                      % TIMEOUT)
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        data += chunk
    os.waitpid(pid, 0)
    answer = json.loads(data)
    test.assertNotIn('crash', answer)
    test.assertEqual(user.pw_uid, answer['uid'])
    return answer['result']
