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
"""Tests with the nova wheel: Nova's functional harness and fake libvirt.

Nova's harness is imported only after the process has chosen its
concurrency mode, as nova-compute does (``nova/cmd/compute.py``) and as
Nova's own test packages do: eventlet patched before anything else is
imported, or, with ``OS_NOVA_DISABLE_EVENTLET_PATCHING=1``, native threads
(Nova 34's default for nova-compute). Patching any later leaves modules
imported before it (oslo.db's transaction context among them) with
unpatched thread-locals, which shows as oslo.db's "Can't upgrade a READER
transaction to a WRITER mid-transaction" and as hangs.
"""

from nova import monkey_patch

monkey_patch.patch()
