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
"""One wiring: the host backend, the ledger and the allocator of a host.

The Nova driver, the command line and the tests assemble them here and
nowhere else, from ``[vgpu_nova_ext]`` of the configuration object they
are given (never the global ``CONF`` behind their back).
"""

import os

from oslo_config import cfg

from vgpu_nova_ext.conf import state as conf_state
from vgpu_nova_ext.devices import allocator as allocator_mod
from vgpu_nova_ext.devices import ledger as ledger_mod
from vgpu_nova_ext import exception
from vgpu_nova_ext.host import base as host_base
from vgpu_nova_ext.host import simulated

#: The simulated host kept beside a host's ledger, so that every process
#: using that state directory sees the same devices.
SIMULATED_HOST_DIR = 'simulated-host'


def host_state_path(conf: cfg.ConfigOpts, host: str,
                    state_path: str | None = None) -> str:
    """``<state_path>/<host>``: the state directory of one compute node.

    :raises ConfigError: for a host name that would leave ``state_path``.
    """
    if not host or host in ('.', '..') or '/' in host or '\0' in host:
        raise exception.ConfigError(
            'host name %r cannot name a state directory: it must not be '
            'empty, "." or "..", nor hold "/"; give the compute node\'s '
            'name as Nova reports it (--host)' % host)
    # Inside nova-compute, ``conf`` is Nova's and holds its state_path.
    return os.path.join(state_path or conf_state.root(conf, conf), host)


class HostDevices:
    """The backend, ledger and allocator of one host; close when done."""

    def __init__(self, backend: host_base.HostBackend,
                 ledger: ledger_mod.Ledger,
                 allocator: allocator_mod.Allocator,
                 state_path: str) -> None:
        self.backend = backend
        self.ledger = ledger
        self.allocator = allocator
        self.state_path = state_path

    def close(self) -> None:
        try:
            self.ledger.close()
        finally:
            self.backend.close()

    def __enter__(self) -> 'HostDevices':
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def make_backend(conf: cfg.ConfigOpts, state_path: str, *,
                 backend_name: str | None = None,
                 sysfs_root: str | None = None,
                 profile: 'str | simulated.Profile | None' = None,
                 keep_simulated_host: bool = True,
                 connection=None) -> host_base.HostBackend:
    """The host backend ``[vgpu_nova_ext]`` (or the caller) names.

    :param profile: a simulated host (overrides ``host_backend``).
    :param keep_simulated_host: keep the simulated host in the state
        directory (False: in a temporary directory, gone at close).
    :param connection: nova-compute's own libvirt connection, for the
        libvirt backend.
    """
    group = conf.vgpu_nova_ext
    name = backend_name or group.host_backend
    if profile is not None or name == 'simulated':
        return simulated.SimulatedBackend(
            profile=profile or group.simulated_profile,
            root=(os.path.join(state_path, SIMULATED_HOST_DIR)
                  if keep_simulated_host else None),
            timeout=group.device_timeout)
    return host_base.load_backend(
        name, sysfs_root=sysfs_root or group.sysfs_root,
        timeout=group.device_timeout, connection=connection)


def open_host(conf: cfg.ConfigOpts, host: str, *,
              targets: dict[str, allocator_mod.Target] | None = None,
              state_path: str | None = None,
              backend: 'host_base.HostBackend | None' = None,
              **backend_args) -> HostDevices:
    """Assemble the devices of ``host`` from ``conf``'s [vgpu_nova_ext].

    :param targets: the GPU providers the allocator serves (the driver
        sets them at every refresh of its plan).
    :param state_path: overrides ``[vgpu_nova_ext] state_path``.
    :param backend: a backend made by the caller (tests); else one is
        made by :func:`make_backend` with ``backend_args``.
    """
    group = conf.vgpu_nova_ext
    path = host_state_path(conf, host, state_path)
    name = backend_args.get('backend_name') or group.host_backend
    if backend is None and backend_args.get('profile') is None \
            and name != 'simulated':
        # A wrong name is refused before the ledger is made.
        host_base.backend_class(name)
    ledger = ledger_mod.Ledger(path)
    try:
        if backend is None:
            backend = make_backend(conf, path, **backend_args)
    except BaseException:
        ledger.close()
        raise
    allocator = allocator_mod.Allocator(
        backend, ledger, targets or {}, lock_path=path,
        free_policy=group.free_device_policy,
        orphan_grace=group.orphan_grace_period,
        mdevctl_path=group.mdevctl_path)
    return HostDevices(backend, ledger, allocator, path)
