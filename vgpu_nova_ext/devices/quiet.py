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
"""Whether a periodic task may skip the full reconcile.

Most periodic tasks find nothing changed. One is quiet when the host's
signature (its device listings), the ledger's version and the domains
libvirt lists are what they were at the last full reconcile, that
reconcile left nothing waiting (no consumer without a domain here, whose
fate Placement tells and time decides), and ``full_reconcile_interval``
has not passed since. See :func:`vgpu_nova_ext.nova.reconcile.reconcile`.
"""

import threading
import time


class QuietTasks:
    """The last full reconcile's signature, and when it ran."""

    def __init__(self, interval: float, clock=time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._guard = threading.Lock()
        self._settled: object | None = None
        self._full_at = 0.0

    def unchanged(self, signature: object | None) -> bool:
        """Whether a task with ``signature`` may skip the reconcile."""
        with self._guard:
            return (signature is not None and self.interval > 0 and
                    signature == self._settled and
                    self._clock() - self._full_at < self.interval)

    def full_pass(self, signature: object | None, settled: bool) -> None:
        """A full reconcile ran from ``signature``.

        :param settled: it left nothing that time or Placement may change
            without the signature changing.
        """
        with self._guard:
            self._full_at = self._clock()
            self._settled = signature if settled else None
