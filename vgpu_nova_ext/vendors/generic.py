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
"""Any mdev device: the kernel's mtty sample, and vendors without a plugin.
"""

from vgpu_nova_ext.vendors import base


class GenericVendor(base.VendorPlugin):

    priority = 1000
    name = 'generic'

    def claims(self, type_id: str, vendor_id: str | None) -> bool:
        return True

    def describe_type(self, type_id: str, name: str | None,
                      description: str | None) -> base.TypeInfo:
        return base.TypeInfo(short_name=(name or type_id).strip())
