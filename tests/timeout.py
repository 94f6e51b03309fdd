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
"""A hard time limit per test that holds under eventlet and native threads.

oslotest's ``OS_TEST_TIMEOUT`` raises in the main thread on SIGALRM: a
test stuck there fails with its traceback. A deadlock inside eventlet's hub
or between native threads may never reach that exception, so behind it
faulthandler's watchdog (a C thread that neither eventlet nor a held lock
stops) prints every thread's stack and ends the worker process: the
runner reports the test as failed, and CI goes on instead of hanging.
"""

import faulthandler
import gc
import os
import sys
import threading
import traceback

import fixtures
import testtools

#: Seconds past the gentle limit before the watchdog ends the process.
GRACE = 120


class HardTimeout(fixtures.Fixture):

    def __init__(self, seconds: float | None = None) -> None:
        super().__init__()
        gentle = float(os.environ.get('OS_TEST_TIMEOUT') or 0)
        self.seconds = seconds if seconds is not None else (
            gentle + GRACE if gentle > 0 else 0)

    def _setUp(self) -> None:
        if self.seconds <= 0:
            return
        faulthandler.dump_traceback_later(self.seconds, exit=True,
                                          file=sys.__stderr__)
        self.addCleanup(faulthandler.cancel_dump_traceback_later)
        # faulthandler sees OS threads only: under eventlet every green
        # thread waits inside the hub's one. A native thread shows them
        # just before the watchdog ends the process.
        timer = _native_threading().Timer(max(0.0, self.seconds - 5),
                                          _dump_green_threads)
        timer.daemon = True
        timer.start()
        self.addCleanup(timer.cancel)


def _native_threading():
    """The threading module of OS threads, patched by eventlet or not."""
    if 'eventlet' in sys.modules:
        from eventlet import patcher
        if patcher.is_monkey_patched('thread'):
            return patcher.original('threading')
    return threading


def _dump_green_threads() -> None:
    try:
        import greenlet
    except ImportError:
        return
    out = sys.__stderr__
    for thread in gc.get_objects():
        if isinstance(thread, greenlet.greenlet) and thread.gr_frame:
            out.write('\nGreen thread %r (most recent call last):\n' % thread)
            traceback.print_stack(thread.gr_frame, file=out)
    out.flush()


class TestCase(testtools.TestCase):
    """A test with a time limit, whatever it runs under.

    ``OS_TEST_TIMEOUT`` seconds (tox sets it) and the test fails with its
    traceback; :data:`GRACE` seconds more and the hard limit ends it.
    """

    def setUp(self):
        super().setUp()
        self.useFixture(HardTimeout())
        gentle = int(float(os.environ.get('OS_TEST_TIMEOUT') or 0))
        if gentle > 0:
            # signal.alarm's whole seconds.
            self.useFixture(fixtures.Timeout(gentle, gentle=True))
