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
"""The host as last read, its type names remembered.

nova-compute's periodic task reconciles the devices and then updates the
provider tree, each needing a scan of the host; the second reuses the
first unless a device changed in between. A full vendor-VFIO GPU no longer
names its types: the names read before (kept in the ledger, so that they
survive a restart) fill them in.
"""

import contextlib
import threading
import time

from vgpu_nova_ext.devices import ledger as ledger_mod
from vgpu_nova_ext.host import base as host_base
from vgpu_nova_ext.host import model


class HostView:
    """Scans of one host, reused while nothing changed."""

    def __init__(self, backend: host_base.HostBackend,
                 ledger: ledger_mod.Ledger) -> None:
        self.backend = backend
        self.ledger = ledger
        # The last scan of the host; how many device changes had been
        # made through this view, and the host's signature, when it began;
        # when it was taken: see scan().
        self._changes = 0
        self._last: tuple[model.HostSnapshot, object, float] | None = None
        self._guard = threading.Lock()
        # {(GPU, type id): (name, description)}: see named().
        self._known_names: dict[tuple[str, str],
                                tuple[str, str | None]] | None = None

    def forget(self) -> None:
        """The next scan reads the host, whatever its age."""
        with self._guard:
            self._last = None

    @contextlib.contextmanager
    def changing(self):
        """Around a change of the host's devices: scans since are stale."""
        try:
            yield
        finally:
            with self._guard:
                self._changes += 1

    def signature(self) -> object | None:
        """The backend's signature of the host and this view's changes.

        None where the backend cannot tell (see
        :meth:`~vgpu_nova_ext.host.base.HostBackend.signature`).
        """
        changes = self._changes
        signature = self.backend.signature()
        return None if signature is None else (changes, signature)

    def scan(self, max_age: float = 0.0,
             unchanged_max_age: float = 0.0) -> model.HostSnapshot:
        """The host, from the last scan if it is recent enough.

        A scan is reused if it is at most ``max_age`` seconds old and no
        device was created or removed through this view since it began
        (a change made by another process shows at the next scan); or if
        it is at most ``unchanged_max_age`` seconds old and the host's
        :meth:`signature` is what it was when the scan began (a change the
        signature does not see waits for the next scan).
        """
        with self._guard:
            last = self._last
        if last is not None:
            snapshot, signature, taken = last
            if max_age > 0 and signature[0] == self._changes and \
                    time.monotonic() - taken <= max_age:
                return snapshot
            if signature[1] is not None and \
                    time.monotonic() - taken <= unchanged_max_age and \
                    signature == self.signature():
                return snapshot
        # Taken before the scan begins: a change that ends during the
        # scan makes this snapshot stale.
        signature = self.signature() or (self._changes, None)
        taken = time.monotonic()
        snapshot = self.named(self.backend.scan())
        with self._guard:
            self._last = (snapshot, signature, taken)
        return snapshot

    def named(self, snapshot: model.HostSnapshot) -> model.HostSnapshot:
        """Remember the type names the host shows; fill those it does not."""
        # The ledger is used outside _guard: a caller may hold the ledger's
        # lock (in a transaction) and then scan.
        known = self._known_names
        if known is None:
            known = self.ledger.type_names()
        seen = snapshot.type_names()
        changed = {k: v for k, v in seen.items() if known.get(k) != v}
        if changed:
            self.ledger.remember_type_names(changed)
        with self._guard:
            known = self._known_names = (self._known_names or known) | changed
        return snapshot.with_type_names(known)
