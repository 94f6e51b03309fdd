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
