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
"""The points between an intent and its completion, named.

Claims, releases, the bring-up after a reboot and the MIG carving pass
them; the crash tests (``tests/unit/lifecycle_child.py``) replace
:func:`reached` to kill the process at one of them, as a power cut or an
OOM kill would, and check that the next start finishes the work.
"""

#: Every point, for the crash tests to go through.
POINTS = (
    'claim.intent_written', 'claim.device_created', 'claim.device_recorded',
    'remove.intent_written', 'remove.device_removed',
    'remove.device_recorded',
    'bring_up.vfs_enabled', 'mig.intent_written', 'mig.mode_set',
    'mig.instance_created', 'recreate.device_created',
)


def reached(name: str) -> None:
    """Does nothing; the crash tests replace it."""
