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
"""Sphinx configuration of vgpu-nova-ext's release notes (reno)."""

extensions = ['openstackdocstheme', 'reno.sphinxext']

openstackdocs_repo_name = 'openstack/vgpu-nova-ext'
openstackdocs_bug_project = 'vgpu-nova-ext'
openstackdocs_bug_tag = 'releasenotes'
openstackdocs_auto_name = False

project = 'vgpu-nova-ext Release Notes'
copyright = '2026, the vgpu-nova-ext developers'
source_suffix = {'.rst': 'restructuredtext'}
master_doc = 'index'
exclude_patterns = ['_build']
pygments_style = 'native'
html_theme = 'openstackdocs'
