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
``vgpu_nova_ext.licensing.vendordata:init_application``
under a WSGI server; this serves the same application with the standard
library's server on ``[vgpu_vendordata] listen``/``port``.
"""

import argparse
import logging
import sys
from wsgiref import simple_server

from vgpu_nova_ext import conf as conf_pkg
from vgpu_nova_ext import exception
from vgpu_nova_ext.licensing import vendordata

LOG = logging.getLogger(__name__)


class _Handler(simple_server.WSGIRequestHandler):

    def log_message(self, format, *args):
        # Request lines only: never bodies, never headers (tokens).
        LOG.info('%s %s', self.address_string(), format % args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='vgpu-nova-ext-vendordata',
        description='Serve the vGPU licensing vendordata to Nova.')
    parser.add_argument('--config-file', action='append', metavar='FILE',
                        help='nova.conf (repeatable); default '
                             '/etc/nova/nova.conf')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format='%(asctime)s %(levelname)s %(message)s')
    files = args.config_file or ['/etc/nova/nova.conf']
    try:
        app = vendordata.build(files)
    except exception.VGPUNovaExtError as exc:
        print('vgpu-nova-ext-vendordata: error: %s' % exc, file=sys.stderr)
        return 2
    group = conf_pkg.CONF.vgpu_vendordata
    server = simple_server.make_server(group.listen, group.port, app,
                                       handler_class=_Handler)
    LOG.info('serving vGPU licensing vendordata on http://%s:%d/%s',
             group.listen, server.server_port,
             '' if not vendordata.needs_auth(group.listen)
             else ' (Keystone token required)')
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == '__main__':
    sys.exit(main())
