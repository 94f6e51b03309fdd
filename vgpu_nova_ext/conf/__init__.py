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
"""Configuration.

The project's own groups live on the global ``CONF``; the options shared
with Nova are read into a private ``cfg.ConfigOpts`` by
:func:`vgpu_nova_ext.conf.devices.load_device_config`. Nothing else reads
``CONF`` directly.
"""

from oslo_config import cfg

from vgpu_nova_ext.conf import extension
from vgpu_nova_ext.conf import licensing
from vgpu_nova_ext.conf import vendordata

CONF = cfg.CONF
extension.register_opts(CONF)
licensing.register_opts(CONF)
vendordata.register_opts(CONF)


def new_conf(group: str = 'vgpu_nova_ext', **overrides) -> cfg.ConfigOpts:
    """A configuration object of this project's own, read from no file.

    For tools, tests and benchmarks that assemble the pieces themselves:
    ``overrides`` are set on ``group``.
    """
    conf = cfg.ConfigOpts()
    extension.register_opts(conf)
    licensing.register_opts(conf)
    vendordata.register_opts(conf)
    conf([], project='vgpu-nova-ext', default_config_files=[],
         default_config_dirs=[], use_env=False)
    for name, value in overrides.items():
        conf.set_override(name, value, group=group)
    return conf
