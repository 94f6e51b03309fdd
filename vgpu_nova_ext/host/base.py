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

from stevedore import driver
from stevedore import exception as stevedore_exc
from stevedore import extension

from vgpu_nova_ext import exception
from vgpu_nova_ext.host import model

NAMESPACE = 'vgpu_nova_ext.host_backends'


class HostBackend(abc.ABC):
    """Reads (and, for the lifecycle work, changes) the host's devices."""

    @abc.abstractmethod
    def describe(self) -> str:
        """One line saying what this backend reads, for logs and the CLI."""

    @abc.abstractmethod
    def scan(self) -> model.HostSnapshot:
        """Return what the host has now."""

    def close(self) -> None:
        """Release what the backend holds (temporary trees, connections)."""


def load_backend(name: str, **kwargs) -> HostBackend:
    """Load the backend registered as ``name`` with these arguments."""
    try:
        # Instantiated here, not by stevedore, so that the backend's own
        # errors (a bad profile, an unreadable root) reach the caller
        # instead of being logged and turned into "no such plugin".
        manager = driver.DriverManager(NAMESPACE, name, invoke_on_load=False)
    except stevedore_exc.NoMatches:
        raise exception.PluginNotFound(
            'no host backend named %r is installed (namespace %s); the '
            'installed ones are: %s' % (name, NAMESPACE,
                                        ', '.join(available_backends())))
    return manager.driver(**kwargs)


def available_backends() -> list[str]:
    mgr = extension.ExtensionManager(NAMESPACE, invoke_on_load=False)
    return sorted(mgr.names())
