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
"""A host's vGPUs as Prometheus metrics (prometheus-client).

Per GPU provider: its type, total, devices in use and reserved units. Per
device: one ``vgpu_nova_ext_device_info`` series whose labels join the
device (mdev UUID or VF address) to its GPU, type, instance and state, so
that GPU telemetry (DCGM, which names vGPUs by the same ids) can be joined
to instances, as KubeVirt's ``kubevirt_vmi_gpu_info`` does. And the
ledger's counters. Labels carry ids only, never a secret.
"""

import dataclasses

from oslo_log import log as logging
from prometheus_client import core
from prometheus_client import registry as prom_registry

from vgpu_nova_ext import exception
from vgpu_nova_ext.host import model
from vgpu_nova_ext import inventory
from vgpu_nova_ext.placement import ownership

LOG = logging.getLogger(__name__)

PREFIX = 'vgpu_nova_ext'


@dataclasses.dataclass(frozen=True)
class DeviceRow:
    device: str
    kind: str
    gpu: str
    type_id: str
    instance: str
    consumer: str
    state: str
    """The ledger's state, or ``foreign`` for a device of another owner."""
    present: bool
    parent: str = ''
    gpu_instance: int | None = None
    gpu_address: str = ''
    """The GPU's PCI address (the providers' ``gpu`` label)."""


@dataclasses.dataclass(frozen=True)
class ManagerRow:
    """A vGPU NVIDIA's manager runs (NVML), and whether it is stale."""

    gpu_address: str
    vgpu: str
    type_id: str
    vm: str
    device: str
    stale: bool


@dataclasses.dataclass(frozen=True)
class HostView:
    """What one scrape reports, read when it is taken."""

    host: str
    providers: tuple[inventory.ProviderSpec, ...]
    devices: tuple[DeviceRow, ...]
    counters: dict[str, int]
    manager: tuple[ManagerRow, ...] | None = None
    """NVML's active vGPUs of the host's GPUs; None: NVML not read."""


class HostCollector(prom_registry.Collector):
    """Collects a :class:`HostView` read anew at every scrape."""

    def __init__(self, read) -> None:
        """:param read: returns the :class:`HostView` of now."""
        self._read = read

    def collect(self):
        up = core.GaugeMetricFamily(
            '%s_up' % PREFIX, '1 when the host, its ledger and its '
            'configuration were read for this scrape, else 0 (see the log)')
        try:
            view = self._read()
        except Exception as exc:
            # Whatever failed, the scrape is answered: up 0, the reason in
            # the log (a traceback only for what this project did not
            # foresee).
            if isinstance(exc, exception.VGPUNovaExtError):
                LOG.error('metrics: cannot read the host: %s', exc)
            else:
                LOG.exception('metrics: cannot read the host')
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        gpu_labels = ['host', 'provider', 'gpu', 'type', 'type_name',
                      'resource_class']
        gauges = {name: core.GaugeMetricFamily(
            '%s_gpu_vgpu_%s' % (PREFIX, name), help_text, labels=gpu_labels)
            for name, help_text in (
                ('total', 'vGPUs the GPU provider offers (its inventory '
                          'total)'),
                ('used', 'vGPU devices of the served type on the GPU'),
                ('reserved', 'vGPUs held back ([mdev_<type>] reserved)'))}
        for p in view.providers:
            values = [view.host, p.name, p.device_address, p.mdev_type,
                      p.type_name or '', p.resource_class]
            gauges['total'].add_metric(values, p.total)
            gauges['used'].add_metric(values, p.used)
            gauges['reserved'].add_metric(values, p.inventory.reserved)
        yield from gauges.values()
        info = core.GaugeMetricFamily(
            '%s_device_info' % PREFIX,
            'One series per vGPU device (1), joining it to its GPU, type, '
            'instance and state', labels=[
                'host', 'device', 'kind', 'gpu', 'type', 'instance',
                'consumer', 'state', 'present'])
        for d in view.devices:
            info.add_metric([view.host, d.device, d.kind, d.gpu_address,
                             d.type_id,
                             d.instance, d.consumer, d.state,
                             'true' if d.present else 'false'], 1)
        yield info
        if view.manager is not None:
            yield from _manager_metrics(view)
        for name, value in sorted(view.counters.items()):
            counter = core.CounterMetricFamily(
                '%s_%s' % (PREFIX, name), _COUNTER_HELP[name],
                labels=['host'])
            counter.add_metric([view.host], value)
            yield counter


def _manager_metrics(view: HostView):
    info = core.GaugeMetricFamily(
        '%s_manager_vgpu_info' % PREFIX,
        'One series per vGPU NVIDIA\'s vGPU manager runs (NVML\'s active '
        'vGPUs; 1); stale: neither the host nor the ledger holds it',
        labels=['host', 'gpu', 'vgpu', 'type', 'vm', 'device', 'stale'])
    stale = core.GaugeMetricFamily(
        '%s_manager_vgpus_stale' % PREFIX,
        'vGPUs NVIDIA\'s manager runs on the GPU that neither the host nor '
        'the ledger holds (vgpu-nova-ext audit --ownership names them)',
        labels=['host', 'gpu'])
    per_gpu: dict[str, int] = {}
    for row in view.manager:
        info.add_metric([view.host, row.gpu_address, row.vgpu, row.type_id,
                         row.vm, row.device,
                         'true' if row.stale else 'false'], 1)
        per_gpu[row.gpu_address] = per_gpu.get(row.gpu_address, 0) + int(
            row.stale)
    for provider in view.providers:
        per_gpu.setdefault(provider.device_address, 0)
    for gpu, count in sorted(per_gpu.items()):
        stale.add_metric([view.host, gpu], count)
    yield info
    yield stale


def manager_rows(snapshot: model.HostSnapshot, entries,
                 links: dict[str, str]) -> tuple[ManagerRow, ...] | None:
    """NVML's vGPUs of the host's GPUs, each marked stale or not."""
    if all(g.manager_vgpus is None for g in snapshot.gpus):
        return None
    found = ownership.manager_findings(entries, links, snapshot)
    stale = {f.where for f in found}
    return tuple(
        ManagerRow(gpu_address=g.address, vgpu=v.vgpu_uuid,
                   type_id=v.type_id, vm=v.vm_id or '',
                   device=v.device_id or '', stale=v.vgpu_uuid in stale)
        for g in snapshot.gpus for v in g.manager_vgpus or ())


_COUNTER_HELP = {
    'claims_failed': 'Claims refused or failed (no room, a device that '
                     'could not be made)',
    'orphans_freed': 'Devices freed after their instance was gone for '
                     'orphan_grace_period',
    'devices_recreated': 'Devices re-created after a host reboot',
}


def registry(read) -> prom_registry.CollectorRegistry:
    """A registry holding only this host's collector."""
    reg = prom_registry.CollectorRegistry(auto_describe=False)
    reg.register(HostCollector(read))
    return reg


def device_rows(snapshot: model.HostSnapshot, entries, instance_of
                ) -> tuple[DeviceRow, ...]:
    """The host's devices and the ledger's, joined by device id.

    :param instance_of: the instance a consumer stands for (a migration's
        is its instance's).
    """
    on_host = {d.device_id: d for d in snapshot.mediated_devices}
    by_id = {e.device_id: e for e in entries}
    addresses = {g.name: g.address for g in snapshot.gpus}
    rows = []
    for device_id in sorted(set(on_host) | set(by_id)):
        entry, device = by_id.get(device_id), on_host.get(device_id)
        gpu = entry.gpu if entry else None
        if gpu is None:
            found = snapshot.gpu_of_parent(device.parent)
            gpu = found.name if found else device.parent
        consumer = entry.consumer if entry and entry.consumer else ''
        rows.append(DeviceRow(
            device=device_id, kind=(entry or device).kind, gpu=gpu,
            type_id=(entry or device).type_id,
            instance=(instance_of(consumer) or consumer) if consumer else '',
            consumer=consumer,
            state='foreign' if entry is None else entry.state,
            present=device is not None, parent=(entry or device).parent,
            gpu_instance=device.gpu_instance if device else None,
            gpu_address=addresses.get(gpu, gpu)))
    return tuple(rows)
