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
"""Sphinx configuration of vgpu-nova-ext's documentation."""

extensions = [
    'openstackdocstheme',
    # The configuration reference, rendered from the options themselves.
    'oslo_config.sphinxext',
    # The policy reference, from the vendordata API's rules.
    'oslo_policy.sphinxext',
    'sphinxcontrib.autoprogram',
    'myst_parser',
]

openstackdocs_repo_name = 'openstack/vgpu-nova-ext'
openstackdocs_bug_project = 'vgpu-nova-ext'
openstackdocs_bug_tag = 'doc'
openstackdocs_auto_name = False

project = 'vgpu-nova-ext'
copyright = '2026, the vgpu-nova-ext developers'
source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
master_doc = 'index'
exclude_patterns = ['_build']
pygments_style = 'native'
html_theme = 'openstackdocs'
# The operator guide's in-page headings are linked to.
myst_heading_anchors = 3
