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
"""When a periodic task may skip the full reconcile: the whole table."""

import itertools

import testtools

from vgpu_nova_ext.devices import quiet


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestQuietTasks(testtools.TestCase):

    def test_table(self):
        # signature of the last full pass, whether it settled, the
        # interval, seconds since it, this task's signature: quiet?
        for last, settled, interval, elapsed, now in itertools.product(
                (None, 'a'), (True, False), (0, 300), (0, 299, 300, 5000),
                (None, 'a', 'b')):
            clock = Clock()
            tasks = quiet.QuietTasks(interval, clock)
            tasks.full_pass(last, settled)
            clock.now += elapsed
            expected = (last is not None and settled and interval > 0 and
                        elapsed < interval and now == last)
            self.assertEqual(
                expected, tasks.unchanged(now),
                (last, settled, interval, elapsed, now))

    def test_nothing_before_the_first_full_pass(self):
        self.assertFalse(quiet.QuietTasks(300).unchanged(None))
        self.assertFalse(quiet.QuietTasks(300).unchanged(('x',)))
