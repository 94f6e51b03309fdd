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
"""Configuration for tests and benchmarks that assemble the pieces.

The product has two entries, :func:`vgpu_nova_ext.conf.load` (the commands
and the vendordata service) and
:func:`vgpu_nova_ext.nova.conf.from_nova_conf` (the driver, inside
nova-compute); these read the same options through the same readers on
private ``ConfigOpts``, leaving the global ``CONF`` alone.
"""

from oslo_config import cfg

from vgpu_nova_ext import conf as conf_pkg
from vgpu_nova_ext.conf import devices as devices_conf
from vgpu_nova_ext.conf import loader


def device_config(config_files, config_dirs=()) -> devices_conf.DeviceConfig:
    """:func:`~vgpu_nova_ext.conf.devices.read` of these sources."""
    conf = cfg.ConfigOpts()
    devices_conf.register_opts(conf)
    return devices_conf.read(loader.parse(conf, config_files, config_dirs))


def own_conf(group: str = 'vgpu_nova_ext', **overrides) -> cfg.ConfigOpts:
    """This project's own groups, read from no file.

    ``overrides`` are set on ``group``.
    """
    conf = cfg.ConfigOpts()
    conf_pkg.register_opts(conf)
    loader.parse(conf, [])
    for name, value in overrides.items():
        conf.set_override(name, value, group=group)
    return conf
