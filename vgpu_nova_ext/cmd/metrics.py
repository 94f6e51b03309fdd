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
"""``vgpu-nova-ext metrics``: the host's vGPUs for Prometheus."""

import sys
from wsgiref import simple_server

import prometheus_client

from vgpu_nova_ext.cmd import common
from vgpu_nova_ext import exception
from vgpu_nova_ext import listen
from vgpu_nova_ext import metrics


def add_parser(sub) -> None:
    parser = sub.add_parser(
        'metrics', help='this host\'s vGPUs as Prometheus metrics',
        description='Per GPU provider (type, total, used, reserved), per '
                    'device (device id, GPU, type, instance, state: join '
                    'GPU telemetry to instances) and the ledger\'s '
                    'counters, in Prometheus\' text format: on stdout, to a '
                    'file for node_exporter\'s textfile collector, or over '
                    'HTTP on a loopback address.')
    out = parser.add_mutually_exclusive_group()
    out.add_argument(
        '--textfile', metavar='FILE',
        help='write them to FILE atomically (a .prom file in '
             'node_exporter\'s --collector.textfile.directory; run from a '
             'timer)')
    out.add_argument(
        '--listen', metavar='ADDRESS:PORT',
        help='serve them at http://ADDRESS:PORT/metrics, read anew at each '
             'scrape, until interrupted; a loopback address only (the '
             'labels name instances)')
    parser.set_defaults(func=run)


def read_view(args) -> metrics.HostView:
    """One scrape: the host as planned and its ledger, read-only."""
    plan = common.build_plan(args)
    ledger = common.read_ledger(args, plan)
    entries = ledger.all()
    rows = metrics.device_rows(plan.snapshot, entries, ledger.instance_of)
    return metrics.HostView(
        host=plan.host, providers=plan.providers, devices=rows,
        counters=ledger.counters(),
        manager=metrics.manager_rows(plan.snapshot, entries, ledger.links()))


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(':')
    host = host.strip('[]')
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not sep or not 0 <= number <= 65535:
        raise exception.ConfigError(
            '--listen %r is not ADDRESS:PORT (for example 127.0.0.1:9484)'
            % text)
    if not listen.is_loopback(host):
        raise exception.ConfigError(
            '--listen %s: the metrics name instances, so they are served on '
            'a loopback address only (127.0.0.1, ::1); scrape them through '
            'a local agent or use --textfile with node_exporter' % text)
    return host, number


#: Seconds a scraper may take to send its request or read the answer; an
#: idle or half-sent connection is closed then, and holds only its own
#: thread meanwhile.
CLIENT_TIMEOUT = 10


def serve(registry, host: str, port: int) -> listen.ThreadingWSGIServer:
    """A server of ``registry`` at ``/metrics`` (not yet serving)."""
    return listen.make_server(
        host, port, prometheus_client.make_wsgi_app(registry),
        _QuietHandler)


class _QuietHandler(simple_server.WSGIRequestHandler):

    timeout = CLIENT_TIMEOUT

    def log_message(self, *args) -> None:
        pass    # a scrape every few seconds is no news


def run(args) -> int:
    if args.listen:
        host, port = parse_listen(args.listen)
        registry = metrics.registry(lambda: read_view(args))
        try:
            server = serve(registry, host, port)
        except OSError as exc:
            raise exception.ConfigError(
                '--listen %s: cannot listen: %s; choose a free port'
                % (args.listen, exc.strerror))
        print('serving metrics on http://%s:%d/metrics' % (
            host, server.server_port), flush=True)
        with server:
            server.serve_forever()
        return 0
    view = read_view(args)      # errors here are the command's errors
    registry = metrics.registry(lambda: view)
    if args.textfile:
        prometheus_client.write_to_textfile(args.textfile, registry)
        print('wrote %d device(s), %d GPU provider(s) to %s' % (
            len(view.devices), len(view.providers), args.textfile))
        return 0
    sys.stdout.write(prometheus_client.generate_latest(registry).decode())
    return 0
