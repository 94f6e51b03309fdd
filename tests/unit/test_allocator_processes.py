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
"""Crash injection and concurrency, with real processes.

A crash is a SIGKILL of the process at each checkpoint between an intent
written to the ledger and its completion; after it, reconcile must leave
host and ledger in agreement: no leaked device, none owned twice, no
half-done intent, and the consumer's claim can be made again.
"""

import json
import os
import subprocess
import sys

from tests.unit import lifecycle
from tests.unit import test_allocator

GPU84 = test_allocator.GPU84
GPU85 = test_allocator.GPU85
CLAIM_POINTS = ('claim.intent_written', 'claim.device_created',
                'claim.device_recorded')
REMOVE_POINTS = ('remove.intent_written', 'remove.device_removed',
                 'remove.device_recorded')
TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def child(directory, profile, op, *items, crash=None):
    argv = [sys.executable, '-m', 'tests.unit.lifecycle_child', directory,
            profile, op, *items]
    if crash:
        argv += ['--crash', crash]
    return subprocess.Popen(argv, cwd=TOP, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


class TestCrashes(test_allocator.AllocatorTestCase):

    def run_child(self, op, *items, crash=None):
        proc = child(self.root, self.profile, op, *items, crash=crash)
        out, err = proc.communicate(timeout=120)
        return proc.returncode, [json.loads(line) for line in
                                 out.splitlines()], err

    def test_crash_during_claim(self):
        runs = 0
        for point in CLAIM_POINTS:
            for nth in (1, 2):
                if point == 'claim.intent_written' and nth == 2:
                    continue   # passed once per claim
                with self.subTest(point=point, nth=nth):
                    consumer = 'c-%s-%d' % (point, nth)
                    code, out, err = self.run_child(
                        'claim', '%s:%s,%s' % (consumer, GPU84, GPU85),
                        crash='%s:%d' % (point, nth))
                    self.assertEqual(-9, code, err)
                    self.assertEqual([], out)
                    self.al.reconcile()
                    self.assertAgree()
                    # The retried claim gets its two devices, once.
                    claim = self.al.claim(consumer, lifecycle.alloc(
                        self.al, GPU84, GPU85))
                    self.assertEqual(2, len(claim.devices))
                    self.assertAgree()
                    self.al.release(consumer)
                    self.assertAgree()
                    self.assertEqual({}, self.ledger_states())
                    self.assertEqual(set(), set(self.host_devices()))
                    runs += 1
        self.assertEqual(5, runs)

    def test_crash_during_claim_of_a_gone_consumer(self):
        code, _, err = self.run_child(
            'claim', 'gone:%s' % GPU84, crash='claim.device_created:1')
        self.assertEqual(-9, code, err)
        self.al.reconcile(live_consumers=set(), now=0.0)
        self.al.reconcile(live_consumers=set(), now=10 ** 6)
        self.assertEqual({}, self.ledger_states())
        self.assertEqual(set(), set(self.host_devices()))

    def test_crash_during_release(self):
        runs = 0
        for point in REMOVE_POINTS:
            for nth in (1, 2):
                with self.subTest(point=point, nth=nth):
                    consumer = 'r-%s-%d' % (point, nth)
                    self.al.claim(consumer, lifecycle.alloc(
                        self.al, GPU84, GPU85))
                    code, out, err = self.run_child(
                        'release', consumer, crash='%s:%d' % (point, nth))
                    self.assertEqual(-9, code, err)
                    self.al.reconcile()
                    self.assertAgree()
                    # The retried release frees what is left.
                    self.al.release(consumer)
                    self.assertEqual({}, self.ledger_states())
                    self.assertEqual(set(), set(self.host_devices()))
                    runs += 1
        self.assertEqual(6, runs)


class TestConcurrency(test_allocator.AllocatorTestCase):
    """64 vGPUs on 8 GPUs, 72 claims from 8 processes at once."""

    def setUp(self):
        self.profile = lifecycle.profile_file(
            self.useFixture(test_allocator.base.fixtures.TempDir()).path)
        self.config = None
        super().setUp()

    def test_concurrent_claims_at_capacity(self):
        gpus = sorted({t.gpu for t in self.al.targets.values()})
        self.assertEqual(8, len(gpus))
        items = ['c%02d:%s' % (i, gpus[i % 8]) for i in range(72)]
        procs = [child(self.root, self.profile, 'claim', *items[n::8])
                 for n in range(8)]
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            self.assertEqual(0, proc.returncode, err)
            results += [json.loads(line) for line in out.splitlines()]
        self.assertEqual(72, len(results))
        won = [r for r in results if 'devices' in r]
        lost = [r for r in results if 'error' in r]
        self.assertEqual(64, len(won))
        self.assertEqual(8, len(lost))
        for result in lost:
            self.assertEqual('ClaimError', result['error'])
            self.assertIn('nothing was changed', result['message'])
        devices = [d for r in won for d in r['devices']]
        self.assertEqual(64, len(set(devices)))
        self.assertEqual(set(devices), set(self.host_devices()))
        self.assertEqual({r['consumer'] for r in won},
                         {c for c, _ in self.ledger_states().values()})
        self.assertAgree()
        for gpu in gpus:
            self.assertEqual(0, self.al.backend.available(gpu, 'nvidia-15'))
