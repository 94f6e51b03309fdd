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
"""The metrics, read back with prometheus-client's own parser."""

import os
import socket
import threading
import time
import urllib.request

import fixtures
import prometheus_client
from prometheus_client import parser

from tests import configs
from tests.unit import base
from tests.unit import lifecycle
from tests.unit import test_cli
from vgpu_nova_ext.cmd import cli
from vgpu_nova_ext.cmd import metrics as metrics_cmd
from vgpu_nova_ext.devices import ledger
from vgpu_nova_ext import exception
from vgpu_nova_ext import inventory
from vgpu_nova_ext import mapping
from vgpu_nova_ext import metrics

CONFIG = ('[devices]\nenabled_mdev_types = nvidia-18\n'
          '[mdev_nvidia-18]\nreserved = 1\n')


def families(text: str) -> dict:
    """{name: [(labels, value)]} as Prometheus' own parser reads them."""
    out: dict = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(
                (sample.labels, sample.value))
    return out


class TestMetrics(base.TestCase):

    def setUp(self):
        super().setUp()
        self.al = lifecycle.build(self.root, 'm60', config=CONFIG)
        self.addCleanup(self.al.ledger.close)

    def view(self):
        config = configs.device_config(
            [os.path.join(self.root, 'nova.conf')])
        snapshot = self.al.scan()
        tree = inventory.provider_tree(lifecycle.HOST,
                                       mapping.assign(config, snapshot))
        return metrics.HostView(
            host=lifecycle.HOST, providers=tree.providers,
            devices=metrics.device_rows(snapshot, self.al.ledger.all(),
                                        self.al.ledger.instance_of),
            counters=self.al.ledger.counters())

    def scrape(self):
        return families(prometheus_client.generate_latest(
            metrics.registry(self.view)).decode())

    def test_providers_devices_and_counters(self):
        gpu = 'pci_0000_84_00_0'
        # A migration's claim names its instance (the join dashboards use).
        self.al.ledger.link('migration-1', 'instance-1')
        (device,) = self.al.claim('migration-1', lifecycle.alloc(
            self.al, gpu)).devices
        self.assertRaises(exception.ClaimError, self.al.claim, 'i2', {
            'no-such-provider': {'resources': {'VGPU': 1}}})
        found = self.scrape()
        self.assertEqual([({}, 1.0)], found['vgpu_nova_ext_up'])
        totals = {labels['gpu']: (labels['type'], value) for labels, value
                  in found['vgpu_nova_ext_gpu_vgpu_total']}
        self.assertEqual(('nvidia-18', 4.0), totals['0000:84:00.0'])
        used = {labels['gpu']: value for labels, value
                in found['vgpu_nova_ext_gpu_vgpu_used']}
        self.assertEqual(1.0, used['0000:84:00.0'])
        self.assertEqual({1.0}, {v for _, v in
                                 found['vgpu_nova_ext_gpu_vgpu_reserved']})
        info = {labels['device']: labels for labels, _ in
                found['vgpu_nova_ext_device_info']}
        self.assertEqual({'host': lifecycle.HOST, 'device': device.device_id,
                          'kind': 'mdev', 'gpu': '0000:84:00.0',
                          'type': 'nvidia-18', 'instance': 'instance-1',
                          'consumer': 'migration-1', 'state': 'active',
                          'present': 'true'}, info[device.device_id])
        self.assertEqual([({'host': lifecycle.HOST}, 1.0)],
                         found['vgpu_nova_ext_claims_failed_total'])

    def test_a_failed_read_is_up_zero(self):
        # Whatever fails: one of this project's errors, or one it did not
        # foresee (a corrupt value): up 0, never an error to the scraper.
        for failure in (exception.HostReadError('no sysfs'),
                        ValueError('invalid literal for int()'),
                        KeyError('gpu')):
            def broken(failure=failure):
                raise failure
            found = families(prometheus_client.generate_latest(
                metrics.registry(broken)).decode())
            self.assertEqual({'vgpu_nova_ext_up': [({}, 0.0)]}, found)


class TestMetricsCommand(test_cli.CLITestCase):

    def test_stdout_and_textfile(self):
        code, out, err = self.run_cli('--simulate', 'v100x8', 'metrics')
        self.assertEqual(0, code, err)
        self.assertIn('vgpu_nova_ext_gpu_vgpu_total', families(out))
        path = os.path.join(self.root, 'vgpu.prom')
        code, out, err = self.run_cli('--simulate', 'v100x8', 'metrics',
                                      '--textfile', path)
        self.assertEqual(0, code, err)
        with open(path) as f:
            self.assertEqual(8, len(families(f.read())[
                'vgpu_nova_ext_gpu_vgpu_total']))
        # Written aside and renamed: no temporary file is left.
        self.assertEqual(['vgpu.prom'], os.listdir(self.root))

    def test_listen_only_on_loopback(self):
        code, out, err = self.run_cli('--simulate', 'v100x8', 'metrics',
                                      '--listen', '0.0.0.0:9484')
        self.assertEqual(2, code)
        self.assertIn('loopback address only', err)
        code, out, err = self.run_cli('--simulate', 'v100x8', 'metrics',
                                      '--listen', '127.0.0.1')
        self.assertEqual(2, code)
        self.assertIn('is not ADDRESS:PORT', err)

    def serve(self, read, host='127.0.0.1'):
        server = metrics_cmd.serve(metrics.registry(read), host, 0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return server

    def view(self):
        return metrics.HostView('cn1', (), (), {'claims_failed': 3,
                                                'orphans_freed': 0,
                                                'devices_recreated': 0})

    def test_an_idle_client_blocks_no_other_scrape(self):
        server = self.serve(self.view)
        idle = socket.create_connection(('127.0.0.1', server.server_port))
        self.addCleanup(idle.close)
        idle.sendall(b'GET /metr')      # half a request line, then nothing
        url = 'http://127.0.0.1:%d/metrics' % server.server_port
        started = time.monotonic()
        with urllib.request.urlopen(url, timeout=5) as answer:
            self.assertEqual(200, answer.status)
        self.assertLess(time.monotonic() - started, 5)

    def test_served_on_ipv6_loopback(self):
        if not socket.has_ipv6:
            self.skipTest('this Python has no IPv6')
        try:
            server = self.serve(self.view, '::1')
        except OSError as exc:    # a kernel without IPv6 (ipv6.disable=1)
            self.skipTest('no IPv6 loopback here: %s' % exc)
        self.assertEqual(('::1', 9484), metrics_cmd.parse_listen(
            '[::1]:9484'))
        url = 'http://[::1]:%d/metrics' % server.server_port
        with urllib.request.urlopen(url, timeout=30) as answer:
            self.assertIn('vgpu_nova_ext_up', answer.read().decode())

    def test_a_scrape_never_writes_nor_waits_for_the_ledger(self):
        state = os.path.join(self.root, 'state')
        os.makedirs(state, mode=0o700)
        # An empty state directory: nothing is created there.
        code, out, err = self.run_cli('--simulate', 'v100x8', '--host',
                                      'cn1', '--state-path', state,
                                      'metrics')
        self.assertEqual(0, code, err)
        self.assertEqual([], os.listdir(state))
        # nova-compute's ledger, held for writing by another process.
        led = ledger.Ledger(os.path.join(state, 'cn1'))
        self.addCleanup(led.close)
        led.count_event('claims_failed', 2)
        with led.transaction():
            started = time.monotonic()
            code, out, err = self.run_cli('--simulate', 'v100x8', '--host',
                                          'cn1', '--state-path', state,
                                          'metrics')
            self.assertLess(time.monotonic() - started, 10)
        self.assertEqual(0, code, err)
        self.assertEqual([({'host': 'cn1'}, 2.0)], families(out)[
            'vgpu_nova_ext_claims_failed_total'])

    def test_a_ledger_that_cannot_be_read_is_up_zero(self):
        state = os.path.join(self.root, 'state')
        led = ledger.Ledger(os.path.join(state, 'cn1'))
        led.count_event('claims_failed')
        with led.transaction():
            led._execute("UPDATE counters SET value = 'lots'")
        led.close()
        # Scraped through the command, as Prometheus would (a corrupt
        # counter gave an HTTP 500 before).
        args = cli.build_parser().parse_args([
            '--simulate', 'v100x8', '--host', 'cn1', '--state-path', state,
            'metrics'])
        server = self.serve(lambda: metrics_cmd.read_view(args))
        log = self.useFixture(fixtures.FakeLogger(name='vgpu_nova_ext'))
        url = 'http://127.0.0.1:%d/metrics' % server.server_port
        with urllib.request.urlopen(url, timeout=30) as answer:
            self.assertEqual(200, answer.status)
            found = families(answer.read().decode())
        self.assertEqual({'vgpu_nova_ext_up': [({}, 0.0)]}, found)
        # Down for the ledger's counter, named, not for anything else.
        self.assertIn('cannot read the host', log.output)
        self.assertIn('lots', log.output)
        self.assertNotIn('Traceback', log.output)

    def test_served_over_http_on_loopback(self):
        reads = []

        def read():
            reads.append(1)
            return metrics.HostView('cn1', (), (), {'claims_failed': 3,
                                                    'orphans_freed': 0,
                                                    'devices_recreated': 0})

        server = self.serve(read)
        url = 'http://127.0.0.1:%d/metrics' % server.server_port
        for _ in range(2):
            with urllib.request.urlopen(url, timeout=30) as answer:
                found = families(answer.read().decode())
        self.assertEqual([({'host': 'cn1'}, 3.0)],
                         found['vgpu_nova_ext_claims_failed_total'])
        self.assertEqual(2, len(reads))     # read anew at each scrape
