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
"""The device configuration as nova-compute has it parsed."""

from nova.conf import devices as nova_devices
from oslo_config import cfg

from vgpu_nova_ext.conf import devices as devices_conf


def from_nova_conf(conf: cfg.ConfigOpts) -> devices_conf.DeviceConfig:
    """The device configuration inside nova-compute.

    Nova registers the type groups itself once its CONF is parsed (the
    libvirt driver does, at start); they are registered here the same way
    first, so that Nova's definitions govern, and then read as everywhere.
    """
    nova_devices.register_dynamic_opts(conf)
    return devices_conf.read(conf)
