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
"""What every command needs: configuration, the host backend, the plan."""

import contextlib
import dataclasses
import os
import shutil
import socket
import tempfile

from oslo_config import cfg

from vgpu_nova_ext import conf as conf_pkg
from vgpu_nova_ext.conf import devices as devices_conf
from vgpu_nova_ext.conf import loader
from vgpu_nova_ext.conf import rootwrap as conf_rootwrap
from vgpu_nova_ext.conf import state as conf_state
from vgpu_nova_ext.devices import factory
from vgpu_nova_ext.devices import ledger as ledger_mod
from vgpu_nova_ext.devices import mig_layout
from vgpu_nova_ext.devices import planning
from vgpu_nova_ext.devices import targets as targets_mod
from vgpu_nova_ext import exception
from vgpu_nova_ext.host import model
from vgpu_nova_ext.host import privsep
from vgpu_nova_ext.host import simulated
from vgpu_nova_ext import inventory
from vgpu_nova_ext import mapping

CONF = conf_pkg.CONF
DEFAULT_CONFIG_FILES = conf_pkg.DEFAULT_CONFIG_FILES


def default_host() -> str:
    """The name Nova gives this host's compute node provider.

    For libvirt that is the hypervisor host name, which libvirt takes from
    gethostname() and, for a short name, the canonical name of the
    resolver (as ``virsh hostname`` prints it).
    """
    name = socket.gethostname()
    if '.' in name:
        return name
    try:
        info = socket.getaddrinfo(name, None, flags=socket.AI_CANONNAME)
    except OSError:
        return name
    for entry in info:
        canonical = entry[3]
        if canonical and not canonical.startswith('localhost'):
            return canonical
    return name


@dataclasses.dataclass(frozen=True)
class Plan:
    """One run's view: where it read, what it found, what it decided."""

    host: str
    backend: str
    config_files: tuple[str, ...]
    """The operator's files read (not a profile's example), those of
    ``--config-dir`` included, in the order oslo.config read them."""
    config_note: str | None
    shared_conf: cfg.ConfigOpts
    """The options shared with Nova ([devices], [placement]), parsed."""
    device_config: devices_conf.DeviceConfig
    snapshot: model.HostSnapshot
    assignment: mapping.Assignment
    tree: inventory.DesiredTree
    targets: dict[str, targets_mod.Target]
    """What each GPU provider stands for, when a device is claimed."""
    mig: mig_layout.Plan
    """The declared MIG layouts against the host as it was read."""
    ledger: ledger_mod.ReadOnlyLedger
    """This host's ledger as read for the plan (empty if unreadable)."""
    state_root: str
    """The directory of every node's ledger: --state-path, else
    ``[vgpu_nova_ext] state_path``, else under Nova's state_path."""
    ledger_error: exception.LedgerError | None = None
    """Why the ledger could not be read, if it could not."""
    device_params: dict[str, tuple[tuple[str, str], ...] | None] | None = None
    """{device: its vGPU plugin parameters (None: it has none)}, where the
    command asked for them (``devices``)."""

    @property
    def providers(self) -> tuple[inventory.ProviderSpec, ...]:
        return self.tree.providers


@contextlib.contextmanager
def _config_files(args, profile: simulated.Profile | None):
    """The files to read, and a note saying where they came from."""
    if args.config_file or args.config_dir:
        yield list(args.config_file or ()), None
        return
    if profile is not None and profile.example_config:
        with tempfile.TemporaryDirectory(prefix='vgpu-nova-ext-') as tmp:
            path = os.path.join(tmp, 'nova.conf')
            with open(path, 'w') as f:
                f.write(profile.example_config)
            yield [path], ('no --config-file given: using the example '
                           'configuration of profile %r' % profile.name)
        return
    found = [f for f in DEFAULT_CONFIG_FILES if os.path.exists(f)]
    yield found, (None if found else
                  'no --config-file given and no %s: no type is enabled'
                  % ', '.join(DEFAULT_CONFIG_FILES))


def _check_sysfs_root(args) -> None:
    if not args.sysfs_root:
        return
    if not os.path.isdir(os.path.join(args.sysfs_root, 'sys')):
        raise exception.HostReadError(
            '--sysfs-root %s has no sys/ directory; give the directory '
            'that contains sys/ (/ on a real host)' % args.sysfs_root)
    missing = [d for d in ('bus', 'class', 'devices') if not os.path.isdir(
        os.path.join(args.sysfs_root, 'sys', d))]
    if missing:
        raise exception.HostReadError(
            '--sysfs-root %s: its sys/ has no %s, which every sysfs has: it '
            'is not a sysfs tree (a copy made without them, or another '
            'directory); give the directory that contains the kernel\'s '
            'sys/ (/ on a real host)' % (args.sysfs_root, ', '.join(
                d + '/' for d in missing)))


def _backend_args(args, profile: simulated.Profile | None) -> dict:
    """What the command line says of the host backend."""
    _check_sysfs_root(args)
    if profile is not None:
        return {'profile': profile}
    if args.sysfs_root:
        return {'backend_name': 'sysfs', 'sysfs_root': args.sysfs_root}
    return {}


def build_plan(args, device_params: bool = False) -> Plan:
    """Read configuration and host, and plan. Raises VGPUNovaExtError.

    :param device_params: read each device's vGPU plugin parameters too.
    """
    profile = simulated.load_profile(args.simulate) if args.simulate else None
    with _config_files(args, profile) as (files, note):
        shared = conf_pkg.load(files, args.config_dir or ())
        device_config = devices_conf.read(shared)
        read = loader.parsed_files(shared)
    # The privsep daemons start as nova-compute starts them.
    privsep.use_root_helper(conf_rootwrap.root_helper(shared))
    host = args.host or default_host()
    state_root = args.state_path or conf_state.root(CONF, shared)
    state = factory.host_state_path(CONF, host, state_root)
    scratch = None
    kept = os.path.join(state, factory.SIMULATED_HOST_DIR)
    if profile is not None and args.state_path and os.path.isdir(kept):
        # The simulated host kept in --state-path (every command reads the
        # same host), through a temporary copy: planning writes nothing
        # where the allocator keeps it.
        _check_sysfs_root(args)
        scratch = tempfile.mkdtemp(prefix='vgpu-nova-ext-plan-')
        copy = os.path.join(scratch, factory.SIMULATED_HOST_DIR)
        shutil.copytree(kept, copy, symlinks=True)
        backend = simulated.SimulatedBackend(
            profile, root=copy, timeout=CONF.vgpu_nova_ext.device_timeout)
    else:
        # Else a simulated host is a fresh one from its profile.
        backend = factory.make_backend(CONF, state,
                                       keep_simulated_host=False,
                                       **_backend_args(args, profile))
    # The ledger, read once, read-only: what nova-compute remembered. A
    # ledger that cannot be read plans as an empty one; the commands that
    # show it (devices, metrics, audit, check) say why.
    try:
        ledger, ledger_error = ledger_mod.ReadOnlyLedger(state), None
    except exception.LedgerError as exc:
        ledger, ledger_error = ledger_mod.ReadOnlyLedger(None), exc
    try:
        names = ledger.type_names()
        snapshot = backend.scan().with_type_names(names)
        mig_plan = mig_layout.plan(device_config, snapshot,
                                   mig_layout.Remembered.of(ledger))
        if profile is not None and any(
                g.action == mig_layout.CARVE for g in mig_plan.gpus):
            # The scratch copy of a simulated host: carve what the next
            # start would, and plan on the result.
            for gpu_plan in mig_plan.gpus:
                if gpu_plan.action == mig_layout.CARVE:
                    mig_layout.carve(backend, gpu_plan)
            snapshot = backend.scan().with_type_names(names)
        description = backend.describe()
        params = {d.uuid: backend.read_vgpu_params(d.kind, d.uuid)
                  for d in snapshot.mediated_devices} \
            if device_params else None
    finally:
        backend.close()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    host_plan = planning.plan(host, device_config, snapshot)
    # A profile's example configuration is no file of the operator's.
    operator_files = tuple(read) if note is None else ()
    return Plan(
        host=host, backend=description, config_files=operator_files,
        shared_conf=shared,
        config_note=note, device_config=device_config, snapshot=snapshot,
        assignment=host_plan.assignment, tree=host_plan.tree,
        targets=host_plan.targets, mig=mig_plan,
        ledger=ledger, ledger_error=ledger_error, state_root=state_root,
        device_params=params)


def read_ledger(args, plan: Plan) -> ledger_mod.ReadOnlyLedger:
    """This host's ledger, read-only (``<state_path>/<host>``).

    A host with no ledger yet reads as empty; a --state-path that does not
    exist is a mistake to name.
    """
    if args.state_path and not os.path.isdir(args.state_path):
        raise exception.LedgerError(
            '--state-path %s is not a directory: give the [vgpu_nova_ext] '
            'state_path nova-compute uses (its ledger is in '
            '<state_path>/<host>)' % args.state_path)
    if plan.ledger_error is not None:
        raise plan.ledger_error
    return plan.ledger


@contextlib.contextmanager
def allocator(args, plan: Plan):
    """The allocator of this host (or of the simulated one).

    Its ledger is ``<state_path>/<host>``, where the driver in
    nova-compute keeps it for the same host; a simulated host is kept
    beside it when ``--state-path`` is given, so that successive commands
    see the same devices.
    """
    profile = simulated.load_profile(args.simulate) if args.simulate \
        else None
    with factory.open_host(
            CONF, plan.host, state_path=plan.state_root,
            targets=plan.targets,
            keep_simulated_host=bool(args.state_path),
            **_backend_args(args, profile)) as devices:
        yield devices.allocator


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns aligned to their widest cell, for people to read."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    lines = []
    for row in [headers] + rows:
        lines.append('  '.join(str(c).ljust(w) for c, w in
                               zip(row, widths)).rstrip())
    return '\n'.join(lines)
