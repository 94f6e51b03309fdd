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
"""mdevctl's definitions of the devices this project makes.

With ``[vgpu_nova_ext] mdevctl_path`` set, every mediated device made is
defined there too (``<mdevctl_path>/<parent>/<uuid>``), so that operators
who use mdevctl see it, and removed with the device.
"""

from vgpu_nova_ext.devices import ledger as ledger_mod
from vgpu_nova_ext.host import address
from vgpu_nova_ext.host import base as host_base
from vgpu_nova_ext.host import model
from vgpu_nova_ext.host import vgpu_params


class Definitions:
    """The definitions in ``path``; nothing at all when it is None."""

    def __init__(self, backend: host_base.HostBackend,
                 path: str | None) -> None:
        self.backend = backend
        self.path = path

    def _parent(self, entry: ledger_mod.Entry) -> str | None:
        """The parent's directory name in mdevctl.d, if one is kept."""
        if not self.path or entry.kind != model.MDEV:
            return None
        return (address.normalize_pci_address(entry.parent)
                or entry.parent.rsplit('_', 1)[-1])

    def write(self, entry: ledger_mod.Entry,
              params: tuple[tuple[str, str], ...] = ()) -> None:
        """``<path>/<parent>/<uuid>``: the kernel side persisted.

        :param params: the device's vGPU plugin parameters, kept in the
            definition's ``attrs`` (``nvidia/vgpu_params``) so that a
            device mdevctl makes again at boot has them too.
        """
        parent = self._parent(entry)
        if parent is not None:
            self.backend.writer.write_mdevctl(
                self.path, parent, entry.device_id, entry.type_id,
                vgpu_params.text(params))

    def forget(self, entry: ledger_mod.Entry) -> None:
        parent = self._parent(entry)
        if parent is not None:
            self.backend.writer.remove_mdevctl(self.path, parent,
                                               entry.device_id)
