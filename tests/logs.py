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
"""Each test's command logging undone after it.

A command sets up oslo.log for its process (``--log-file`` and ``--debug``
as overrides on the global ``CONF``, the root logger's handlers). A test
runner keeps one process for many tests, so without this a later test that
parses the configuration directly logs to a file in a temporary directory
already removed, and fails by the order the runner chose.
"""

import logging

import fixtures
from oslo_config import cfg

from vgpu_nova_ext import conf as conf_pkg
from vgpu_nova_ext.conf import logs


class CommandLogging(fixtures.Fixture):
    """Puts back the logging a command's ``logs.set_up`` changes."""

    def _setUp(self):
        root = logging.getLogger()
        self.addCleanup(setattr, root, 'handlers', list(root.handlers))
        self.addCleanup(root.setLevel, root.level)
        self.addCleanup(self._forget)

    @staticmethod
    def _forget():
        for name in ('log_file', 'debug'):
            try:
                conf_pkg.CONF.clear_override(name)
            except cfg.NoSuchOptError:
                pass    # oslo.log's options not registered yet
        logs._product, logs._quiet = None, False
