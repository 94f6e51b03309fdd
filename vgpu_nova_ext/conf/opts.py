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
"""All options, for oslo-config-generator (``tox -e genconfig``)."""

from vgpu_nova_ext.conf import devices
from vgpu_nova_ext.conf import extension
from vgpu_nova_ext.conf import licensing
from vgpu_nova_ext.conf import placement
from vgpu_nova_ext.conf import vendordata
from vgpu_nova_ext.host import privsep


def list_opts():
    return (extension.list_opts() + licensing.list_opts() +
            vendordata.list_opts() + devices.list_opts() +
            placement.list_opts() + privsep.list_opts())
