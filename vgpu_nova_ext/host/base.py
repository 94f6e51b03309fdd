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
"""The host backend plugin interface and its loader.

Backends are stevedore plugins in the ``vgpu_nova_ext.host_backends``
namespace, as os-vif loads its VIF plugins: a small base class, one plugin
per way of reaching the host.
"""

import abc
import uuid as uuidlib

from stevedore import driver
from stevedore import exception as stevedore_exc
from stevedore import extension

from vgpu_nova_ext import exception
from vgpu_nova_ext.host import model
from vgpu_nova_ext.host import privsep

NAMESPACE = 'vgpu_nova_ext.host_backends'


class HostBackend(abc.ABC):
    """Reads (and, for the lifecycle work, changes) the host's devices."""

    #: Where this backend's host writes go (mdevctl's files too):
    #: :mod:`vgpu_nova_ext.host.privsep`, or in place where no privilege
    #: is needed.
    writer = privsep

    @abc.abstractmethod
    def describe(self) -> str:
        """One line saying what this backend reads, for logs and the CLI."""

    @abc.abstractmethod
    def scan(self) -> model.HostSnapshot:
        """Return what the host has now."""

    def close(self) -> None:
        """Release what the backend holds (temporary trees, connections)."""

    def signature(self) -> object | None:
        """A cheap value that changes when a device comes or goes.

        Cheaper than :meth:`scan` by far; it need not see every change
        (a full scan still runs now and then). None: this backend cannot
        tell, so every scan reads the host.
        """
        return None

    # -- the write side (device lifecycle) --------------------------------
    #: What this backend's devices are: mdevs named by UUID, or VFs.
    device_kind = model.MDEV

    def device_kind_of(self, parent: str) -> str:
        """The kind of device made on ``parent``."""
        return self.device_kind

    def new_device_id(self, parent: str, type_id: str) -> str:
        """The id a new device on ``parent`` will have."""
        return str(uuidlib.uuid4())

    def available(self, parent: str, type_id: str) -> int:
        """``available_instances`` of one type on one parent, read now."""
        raise NotImplementedError(
            'the %s backend cannot create devices' % self.describe())

    def create_device(self, parent: str, type_id: str,
                      device_id: str) -> None:
        """Create a device and wait (bounded) until it is there.

        :raises DeviceError: or a subclass naming the cause.
        """
        raise NotImplementedError(
            'the %s backend cannot create devices' % self.describe())

    def remove_device(self, device_id: str) -> None:
        """Remove a device for good and wait (bounded) until it is gone.

        Any persistent definition is undefined too, so that the device does
        not come back at the next boot; a device already gone is fine.
        """
        raise NotImplementedError(
            'the %s backend cannot remove devices' % self.describe())

    def device_exists(self, device_id: str) -> bool:
        raise NotImplementedError

    def read_vgpu_params(self, kind: str, device_id: str
                         ) -> tuple[tuple[str, str], ...] | None:
        """A device's ``nvidia/vgpu_params``; None where it has none."""
        return None

    def set_vgpu_params(self, kind: str, device_id: str,
                        params: tuple[tuple[str, str], ...]) -> None:
        """Write a device's plugin parameters (``()`` clears them)."""
        raise NotImplementedError(
            'the %s backend cannot write vGPU parameters' % self.describe())

    def mig_command(self, gpu_address: str, command: str,
                    argument: str = '') -> None:
        """One MIG step on one GPU (``writes.MIG_COMMANDS``)."""
        raise NotImplementedError(
            'the %s backend cannot carve GPU instances' % self.describe())


def backend_class(name: str) -> type:
    """The backend class registered as ``name``.

    :raises PluginNotFound: naming the installed ones.
    """
    try:
        # Instantiated by the caller, not by stevedore, so that the
        # backend's own errors (a bad profile, an unreadable root) reach it
        # instead of being logged and turned into "no such plugin".
        manager = driver.DriverManager(NAMESPACE, name, invoke_on_load=False)
    except stevedore_exc.NoMatches:
        raise exception.PluginNotFound(
            'no host backend named %r is installed (namespace %s); set '
            '[vgpu_nova_ext] host_backend to one of: %s' % (
                name, NAMESPACE, ', '.join(available_backends())))
    return manager.driver


def load_backend(name: str, **kwargs) -> HostBackend:
    """Load the backend registered as ``name`` with these arguments."""
    return backend_class(name)(**kwargs)


def available_backends() -> list[str]:
    mgr = extension.ExtensionManager(NAMESPACE, invoke_on_load=False)
    return sorted(mgr.names())
