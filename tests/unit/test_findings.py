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
"""One finding type: its codes, where they are used and documented."""

import ast
import os
import re

import testtools

from vgpu_nova_ext import findings
from vgpu_nova_ext.placement import audit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
PACKAGE = os.path.join(ROOT, 'vgpu_nova_ext')
GUIDE = os.path.join(ROOT, 'doc', 'source', 'admin', 'operator-guide.md')
CODE = re.compile(r'^[a-z]+\.[a-z_]+$')


def _sources():
    for directory, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith('.py'):
                path = os.path.join(directory, name)
                with open(path) as f:
                    yield path, ast.parse(f.read())


class TestCodes(testtools.TestCase):

    def test_each_code_once_and_well_formed(self):
        codes = findings.codes()
        self.assertGreater(len(codes), 40)
        self.assertEqual(len(codes), len(set(codes.values())))
        for name, code in codes.items():
            self.assertRegex(code, CODE)
            # The constant's name is its code's.
            self.assertEqual(name, code.upper().replace('.', '_'))

    def test_the_guide_documents_every_code_and_no_other(self):
        with open(GUIDE) as f:
            guide = f.read()
        section = guide.split('### Finding codes', 1)[1].split('\n## ', 1)[0]
        documented = re.findall(r'^\| `([a-z_.]+)` \|', section, re.M)
        self.assertEqual(sorted(findings.codes().values()),
                         sorted(documented))

    def test_every_code_is_used_and_none_written_inline(self):
        used = set()
        inline = []
        known = set(findings.codes().values())
        for path, tree in _sources():
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and \
                        node.attr in findings.codes():
                    used.add(node.attr)
                elif (isinstance(node, ast.Constant) and
                      node.value in known and
                      not path.endswith('findings.py')):
                    inline.append((path, node.lineno, node.value))
        self.assertEqual([], inline)
        self.assertEqual(set(), set(findings.codes()) - used)

    def test_a_drift_is_a_finding(self):
        for kind in (audit.MISSING, audit.UNEXPECTED, audit.INVENTORY,
                     audit.TRAITS, audit.PARENT):
            drift = audit.Drift('host1_pci_0000_84_00_0', kind,
                                {'VGPU': {'total': 4}},
                                {'VGPU': {'total': 16}})
            finding = drift.finding()
            self.assertIn(finding.code, findings.codes().values())
            self.assertEqual('provider.%s' % kind, finding.code)
            self.assertEqual('provider host1_pci_0000_84_00_0',
                             finding.where)
            self.assertIn('"total": 16', finding.why)
            self.assertIn('"total": 4', finding.why)
            self.assertTrue(finding.fix)

    def test_str_names_where_value_why_and_fix(self):
        finding = findings.Finding(
            findings.ADDRESS_MALFORMED, findings.ERROR,
            '[mdev_nvidia-35] device_addresses', 'zz:00', 'not an address',
            'correct it')
        self.assertEqual('[mdev_nvidia-35] device_addresses = zz:00: not an '
                         'address. Fix: correct it', str(finding))
        self.assertEqual('error', finding.severity)
