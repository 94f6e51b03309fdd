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
"""``vgpu-nova-ext-vendordata``: the vendordata service, for development.

Production deployments run
``vgpu_nova_ext.licensing.vendordata:init_application`` under a WSGI
server; this serves the same application with the standard library's
server on ``[vgpu_vendordata] listen``/``port``, one thread per connection
(a slow or idle client holds its own thread only, for at most
:data:`CLIENT_TIMEOUT` seconds).
"""

import argparse
import sys
from wsgiref import simple_server

from oslo_log import log as logging

from vgpu_nova_ext import conf as conf_pkg
from vgpu_nova_ext.conf import logs
from vgpu_nova_ext import exception
from vgpu_nova_ext.licensing import vendordata
from vgpu_nova_ext import listen

LOG = logging.getLogger(__name__)

#: Seconds a client may take to send its request or read the answer.
CLIENT_TIMEOUT = 30


class _Handler(simple_server.WSGIRequestHandler):

    timeout = CLIENT_TIMEOUT

    def log_message(self, format, *args):
        # Request lines only: never bodies, never headers (tokens).
        LOG.info('%s %s', self.address_string(), format % args)


def make_server(host: str, port: int, app) -> listen.ThreadingWSGIServer:
    return listen.make_server(host, port, app, _Handler)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='vgpu-nova-ext-vendordata',
        description='Serve the vGPU licensing vendordata to Nova.')
    parser.add_argument('--config-file', action='append', metavar='FILE',
                        help='nova.conf (repeatable); default '
                             '/etc/nova/nova.conf')
    parser.add_argument('--config-dir', action='append', metavar='DIR',
                        help='a directory of .conf snippets read after the '
                             'files (repeatable)')
    parser.add_argument('--noauth', action='store_true',
                        help='serve without Keystone tokens or policy: for '
                             'development only, and only on a loopback '
                             '[vgpu_vendordata] listen address')
    parser.add_argument('--debug', action='store_true',
                        help='log at DEBUG level (oslo.log)')
    parser.add_argument('--log-file', metavar='FILE',
                        help='write the log to FILE instead of stderr')
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.set_up(conf_pkg.CONF, 'vgpu-nova-ext-vendordata', debug=args.debug,
                log_file=args.log_file)
    files = args.config_file or list(conf_pkg.DEFAULT_CONFIG_FILES)
    try:
        app = vendordata.build(files, args.config_dir or (),
                               authenticate=not args.noauth)
        group = conf_pkg.CONF.vgpu_vendordata
        if args.noauth and not listen.is_loopback(group.listen):
            raise exception.ConfigError(
                '--noauth serves licensing tokens to anyone who connects, so '
                'it is refused on [vgpu_vendordata] listen = %s; set listen '
                'to 127.0.0.1 or drop --noauth (and give Nova '
                '[vendordata_dynamic_auth] credentials)' % group.listen)
    except exception.VGPUNovaExtError as exc:
        print('vgpu-nova-ext-vendordata: error: %s' % exc, file=sys.stderr)
        return 2
    try:
        server = make_server(group.listen, group.port, app)
    except OSError as exc:
        print('vgpu-nova-ext-vendordata: error: cannot listen on %s:%d: %s; '
              'choose a free [vgpu_vendordata] listen/port' % (
                  group.listen, group.port, exc.strerror), file=sys.stderr)
        return 2
    LOG.info('serving vGPU licensing vendordata on http://%s:%d/ (%s)',
             group.listen, server.server_port,
             'NO AUTHENTICATION: development only' if args.noauth
             else 'Keystone token and policy required')
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
