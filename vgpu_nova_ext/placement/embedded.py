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
"""An embedded Placement service for the demo and the tests.

The real ``openstack-placement`` package, SQLite in a private directory,
``[api] auth_strategy = noauth2``, served on 127.0.0.1 only, in a child
process so that it can be stopped and started again on the same port and
database (the tests stop it in the middle of a write).
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

from vgpu_nova_ext import exception

ADMIN_TOKEN = 'admin'
_READY = 'PLACEMENT-LISTENING'
_CONF_TEMPLATE = """[DEFAULT]
debug = False
log_file = %(log)s

[api]
auth_strategy = noauth2

[placement_database]
connection = sqlite:///%(db)s
sync_on_startup = True
"""


class EmbeddedPlacement:
    """Start, stop and restart a local Placement; a context manager."""

    def __init__(self, workdir: str | None = None, port: int = 0,
                 start_timeout: float = 60.0) -> None:
        self._own_dir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix='vgpu-placement-')
        self.port = port
        self.start_timeout = start_timeout
        self.process: subprocess.Popen | None = None
        self.config_file = os.path.join(self.workdir, 'placement.conf')
        self.log_file = os.path.join(self.workdir, 'placement.log')
        with open(self.config_file, 'w') as f:
            f.write(_CONF_TEMPLATE % {
                'log': self.log_file,
                'db': os.path.join(self.workdir, 'placement.db')})
        os.chmod(self.config_file, 0o600)

    @property
    def endpoint(self) -> str:
        return 'http://127.0.0.1:%d' % self.port

    def start(self) -> str:
        if self.process is not None:
            return self.endpoint
        self.process = subprocess.Popen(
            [sys.executable, '-m', 'vgpu_nova_ext.placement.embedded',
             self.config_file, str(self.port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + self.start_timeout
        output = []
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            if line.startswith(_READY):
                self.port = int(line.split()[1])
                return self.endpoint
            output.append(line)
        self.stop()
        raise exception.VGPUNovaExtError(
            'the embedded Placement did not start: %s (log: %s)' % (
                ''.join(output[-5:]).strip() or 'no output',
                self.log_file))

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.process = None

    def restart(self) -> str:
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> 'EmbeddedPlacement':
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()


def _serve(config_file: str, port: int) -> None:
    """Child process: load Placement and serve it on 127.0.0.1."""
    from wsgiref import simple_server

    from oslo_config import cfg
    from oslo_log import log as logging
    from placement import conf as placement_conf
    from placement import db_api
    from placement import deploy

    config = cfg.ConfigOpts()
    placement_conf.register_opts(config)
    config(args=[], project='placement', default_config_files=[config_file])
    logging.setup(config, 'placement')
    db_api.configure(config)
    app = deploy.loadapp(config)

    class QuietHandler(simple_server.WSGIRequestHandler):
        def log_message(self, *args):
            pass

    server = simple_server.make_server('127.0.0.1', port, app,
                                       handler_class=QuietHandler)
    print('%s %d' % (_READY, server.server_port), flush=True)
    server.serve_forever()


if __name__ == '__main__':
    _serve(sys.argv[1], int(sys.argv[2]))
