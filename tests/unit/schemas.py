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
"""libvirt's own RelaxNG schemas (Debian's libvirt0 package installs them).

.ci/run installs the package and sets VGPU_NOVA_EXT_REQUIRE_SCHEMAS=1, so
that CI fails rather than skips when they are missing.
"""

import os

SCHEMA_DIR = os.environ.get('LIBVIRT_SCHEMA_DIR',
                            '/usr/share/libvirt/schemas')


def relaxng(testcase, name: str):
    path = os.path.join(SCHEMA_DIR, name)
    try:
        from lxml import etree
    except ImportError:
        etree = None
    if etree is None or not os.path.exists(path):
        message = ('libvirt schema %s or lxml missing: apt-get install '
                   'libvirt0; pip install lxml' % path)
        if os.environ.get('VGPU_NOVA_EXT_REQUIRE_SCHEMAS'):
            testcase.fail(message)
        testcase.skipTest(message)
    return etree.RelaxNG(etree.parse(path)), etree


def assert_valid(testcase, schema_name: str, xml: str) -> None:
    schema, etree = relaxng(testcase, schema_name)
    document = etree.fromstring(xml.encode())
    if not schema.validate(document):
        testcase.fail('not valid against %s: %s\n%s' % (
            schema_name, schema.error_log, xml))
