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
"""The extension's wiring: one compute node's backend, plan and allocator.

Built once per nova-compute on first use (the driver holds it): the
declared MIG layouts carved, then the host planned; planned again at every
provider tree update.
"""

from oslo_log import log as logging

from vgpu_nova_ext import conf as conf_pkg
from vgpu_nova_ext.devices import factory
from vgpu_nova_ext.devices import planning
from vgpu_nova_ext.devices import quiet
from vgpu_nova_ext.devices import scheduling
from vgpu_nova_ext import exception
from vgpu_nova_ext import findings
from vgpu_nova_ext import inventory
from vgpu_nova_ext.nova import compat
from vgpu_nova_ext.nova import conf as nova_conf

LOG = logging.getLogger(__name__)
CONF = conf_pkg.CONF

#: How old a scan of the host the provider tree may be built from: the
#: resource tracker updates the tree right after get_available_resource,
#: whose reconcile has just scanned (and a device change made here since
#: forces a new scan whatever its age).
SCAN_REUSE_SECONDS = 10.0


class Extension:
    """The host's backend, plan and allocator, for one compute node."""

    def __init__(self, nodename: str, libvirt_connection=None) -> None:
        self.nodename = nodename
        conf_pkg.validate(CONF)
        self.config = nova_conf.from_nova_conf(CONF)
        # The libvirt backend shares nova-compute's own connection.
        self.devices = factory.open_host(CONF, nodename,
                                         connection=libvirt_connection)
        self.state_path = self.devices.state_path
        self.backend = self.devices.backend
        self.ledger = self.devices.ledger
        self.allocator = self.devices.allocator
        self.quiet = quiet.QuietTasks(
            CONF.vgpu_nova_ext.full_reconcile_interval)
        # The last plan, and the provider UUIDs and usage it was made with.
        self._planned: tuple | None = None
        self.bring_up()
        self.carve_mig_layouts()
        self._schedulers_declared = any(t.scheduler
                                        for t in self.config.types)
        self._scheduler_told: set[str] = set()
        self.refresh()

    def bring_up(self) -> None:
        """After a reboot, the VFs of the GPUs this host serves.

        A GPU whose VFs cannot be enabled is logged and serves nothing (it
        has no provider until it does); the others go on.
        """
        if not CONF.vgpu_nova_ext.bring_up_at_start:
            return
        steps, left = self.allocator.bring_up(self.config)
        failed = {p.where for p in left}
        for step in steps:
            if 'host GPU %s' % step.gpu not in failed:
                LOG.info('vGPU bring-up: GPU %s had no virtual function '
                         '(%s); enabled', step.gpu, step.why)
        for problem in left:
            LOG.error('vGPU bring-up: %s', problem)

    def carve_mig_layouts(self) -> None:
        """The GPU instances nova.conf declares, before anything is planned.

        A GPU that holds no vGPU is carved; one that holds vGPUs keeps its
        instances (a warning says how to change them). A layout that does
        not fit stops the start, as any configuration error does.
        """
        result = self.allocator.carve_mig_layouts(self.config)
        for problem in result.problems:
            log = LOG.error if problem.severity == findings.ERROR \
                else LOG.warning
            log('vGPU MIG layout: %s', problem)
        errors = [p for p in result.problems
                  if p.severity == findings.ERROR]
        if errors:
            raise exception.ConfigError(
                'the declared MIG layouts do not fit this host (run '
                '"vgpu-nova-ext check"): %s' % '; '.join(
                    str(p) for p in errors))

    @property
    def snapshot(self):
        """The host as :meth:`refresh` last planned it."""
        return self._planned[0].snapshot

    def refresh(self, existing_uuids: dict[str, str] | None = None,
                allocated: dict[str, int] | None = None,
                _again: bool = False) -> inventory.DesiredTree:
        """Plan the host again; returns the desired GPU providers.

        :param allocated: as for :func:`inventory.provider_tree`.
        """
        snapshot = self.allocator.scan(
            max_age=SCAN_REUSE_SECONDS,
            unchanged_max_age=self.quiet.interval)
        planned = self._planned
        if planned is not None and planned[0].snapshot is snapshot and \
                planned[1:] == (existing_uuids, allocated):
            # A quiet periodic task: the host as last planned.
            return planned[0].tree
        host_plan = planning.plan(
            self.nodename, self.config, snapshot, existing_uuids,
            allocated=allocated, owner_trait=compat.features().owner_trait)
        self.assignment = host_plan.assignment
        for problem in self.assignment.problems:
            log = LOG.error if problem.severity == findings.ERROR \
                else LOG.warning
            log('vGPU configuration: %s', problem)
        if self.assignment.errors:
            raise exception.ConfigError(
                'the vGPU configuration does not fit this host (run '
                '"vgpu-nova-ext check"): %s' % '; '.join(
                    str(p) for p in self.assignment.errors))
        for problem in host_plan.tree.problems:
            LOG.warning('vGPU inventory: %s', problem)
        self.allocator.targets = host_plan.targets
        self._planned = (host_plan, existing_uuids, allocated)
        if self._schedulers_declared and not _again and \
                self.set_vgpu_schedulers():
            # Set: plan again on what NVML says now (the traits change).
            self._planned = None
            return self.refresh(existing_uuids, allocated, _again=True)
        return host_plan.tree

    def set_vgpu_schedulers(self) -> bool:
        """The declared vGPU schedulers of the idle GPUs (each new plan).

        :returns: whether a GPU's scheduler was set.
        """
        planned = scheduling.plan(self.config, self.assignment)
        done, failed = self.allocator.set_vgpu_schedulers(planned)
        found = scheduling.problems(planned) + failed
        # Each once while it lasts: the periodic task plans every minute.
        for problem in found:
            if problem.why not in self._scheduler_told:
                LOG.warning('vGPU scheduler: %s', problem)
        self._scheduler_told = {p.why for p in found}
        return bool(done)
