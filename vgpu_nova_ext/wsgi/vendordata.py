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
"""The vendordata service for a WSGI server: ``module = <this>:application``.

uWSGI's ``--module`` and mod_wsgi's ``WSGIScriptAlias`` load a module
attribute, not a factory; the configuration comes from
``VGPU_NOVA_EXT_CONFIG_FILES`` and ``VGPU_NOVA_EXT_CONFIG_DIRS`` (see
:func:`vgpu_nova_ext.licensing.vendordata.init_application`).
"""

from vgpu_nova_ext.licensing import vendordata

application = vendordata.init_application()
