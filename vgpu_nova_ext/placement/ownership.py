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
"""Who holds which vGPU: Placement, the ledger, the host and the guests.

Read-only. Every vGPU allocation of this host's GPU providers in
Placement, every device the ledger gives a consumer, every device on the
host and every device in a guest's domain, joined; each disagreement is a
:class:`~vgpu_nova_ext.findings.Finding` (an ``owner.*`` code) whose
``where`` is the consumer, device or guest it is about.
"""

import dataclasses

from vgpu_nova_ext.devices import guest as guest_mod
from vgpu_nova_ext.devices import ledger as ledger_mod
from vgpu_nova_ext import findings as codes
from vgpu_nova_ext.host import model

Finding = codes.Finding


def _finding(code: str, subject: str, value: str, why: str,
             fix: str) -> Finding:
    # A disagreement is a warning: the service works on, and each one
    # has a fix that needs no restart.
    return Finding(code, codes.WARNING, subject, value, why, fix)


@dataclasses.dataclass(frozen=True)
class Allocation:
    consumer: str
    provider: str
    """The GPU provider's name."""
    gpu: str
    """The GPU's libvirt name (the ledger's ``gpu``)."""
    amount: int


def join(allocations: list[Allocation], entries: list[ledger_mod.Entry],
         links: dict[str, str], snapshot: model.HostSnapshot,
         guests: dict[str, list[str]] | None) -> list[Finding]:
    """Every disagreement between the four views.

    :param links: {migration consumer: its instance}.
    :param guests: {instance UUID: devices in its domain}; None when the
        guests' domains could not be read (nothing is said of them).
    """
    def instance(consumer: str) -> str:
        return links.get(consumer, consumer)

    held = [e for e in entries if e.consumer is not None]
    on_host = {d.device_id for d in snapshot.mediated_devices}
    free = {}
    for e in entries:
        if e.state == ledger_mod.FREE:
            free.setdefault((e.gpu, e.type_id), []).append(e.device_id)
    findings = []
    allocated = {(a.consumer, a.gpu): a for a in allocations}
    for a in allocations:
        mine = [e for e in held if e.consumer == a.consumer]
        here = [e for e in mine if e.gpu == a.gpu]
        if len(here) >= a.amount:
            continue
        elsewhere = [e for e in mine if e.gpu != a.gpu
                     and (a.consumer, e.gpu) not in allocated]
        if elsewhere:
            findings.append(_finding(
                codes.OWNER_DEVICE_ON_OTHER_GPU, a.consumer, a.provider,
                '%d vGPU(s) allocated on %s, but its device(s) %s are on %s'
                % (a.amount, a.provider, ', '.join(
                    e.device_id for e in elsewhere), ', '.join(sorted(
                        {e.gpu for e in elsewhere}))),
                'hard reboot the instance (openstack server reboot --hard): '
                'its devices are claimed again from its allocations'))
            continue
        spare = [d for (gpu, _), ids in free.items() if gpu == a.gpu
                 for d in ids]
        findings.append(_finding(
            codes.OWNER_ALLOCATION_WITHOUT_DEVICE, a.consumer, a.provider,
            '%d vGPU(s) allocated on %s but %d device(s) held there%s' % (
                a.amount, a.provider, len(here),
                ' (Placement counts a unit a free device, %s, could give)'
                % ', '.join(spare) if spare else ''),
            'openstack server reboot --hard %s claims its devices again; '
            'if that consumer is no instance any more, remove its '
            'allocations (openstack resource provider allocation delete '
            '%s)' % (a.consumer, a.consumer)))
    for e in held:
        # A device on another GPU than its allocation is named above.
        if not any(a.consumer == e.consumer for a in allocations):
            findings.append(_finding(
                codes.OWNER_DEVICE_WITHOUT_ALLOCATION, e.device_id, e.gpu,
                '%s holds it on %s, but Placement has no vGPU allocation '
                'of %s on this host' % (e.consumer, e.gpu, e.consumer),
                'nothing to do if the instance was deleted or moved: '
                'reconcile frees it after [vgpu_nova_ext] '
                'orphan_grace_period; else hard reboot the instance'))
        if e.device_id not in on_host and e.state == ledger_mod.ACTIVE:
            findings.append(_finding(
                codes.OWNER_DEVICE_MISSING, e.device_id, e.gpu,
                'the ledger gives it to %s, but the host has no such '
                'device (a host reboot, removed by hand?)' % e.consumer,
                'vgpu-nova-ext reconcile (nova-compute\'s start does it) '
                'makes it again, same id, same GPU'))
    if guests is not None:
        by_id = {e.device_id: e for e in entries}
        for uuid, devices in sorted(guests.items()):
            for device_id in devices:
                entry = by_id.get(device_id)
                if entry is None:
                    findings.append(_finding(
                        codes.OWNER_GUEST_DEVICE_UNKNOWN, uuid, device_id,
                        'its domain uses %s, which the ledger does not know'
                        % device_id,
                        'vgpu-nova-ext reconcile adopts it for the guest'))
                elif entry.consumer is None or instance(
                        entry.consumer) != uuid:
                    findings.append(_finding(
                        codes.OWNER_GUEST_DEVICE_NOT_ITS_OWN, uuid,
                        device_id,
                        'its domain uses %s, which the ledger gives to %s'
                        % (device_id, entry.consumer or 'nobody (free)'),
                        'hard reboot the instance: its domain is rebuilt '
                        'with the devices the ledger gives it'))
    findings.extend(manager_findings(entries, links, snapshot))
    return findings


def manager_findings(entries: list[ledger_mod.Entry], links: dict[str, str],
                     snapshot: model.HostSnapshot) -> list[Finding]:
    """vGPUs NVIDIA's manager runs that no device accounts for.

    NVML's view (where it was read): a vGPU whose mdev is neither on the
    host nor in the ledger, or, where NVML names no mdev (vendor-VFIO),
    whose VM holds no device of the ledger on that GPU.
    """
    on_host = {d.device_id for d in snapshot.mediated_devices}
    known = {e.device_id for e in entries}
    holders = {(e.gpu, links.get(e.consumer, e.consumer))
               for e in entries if e.consumer is not None}
    out = []
    for gpu in snapshot.gpus:
        for vgpu in gpu.manager_vgpus or ():
            if vgpu.device_id is not None:
                if vgpu.device_id in on_host or vgpu.device_id in known:
                    continue
                what = 'mdev %s' % vgpu.device_id
            else:
                if vgpu.vm_id and (gpu.name, vgpu.vm_id) in holders:
                    continue
                what = 'no device this host knows of'
            out.append(_finding(
                codes.OWNER_MANAGER_VGPU_UNKNOWN, vgpu.vgpu_uuid,
                gpu.address,
                'NVIDIA\'s vGPU manager runs vGPU %s (%s, VM %s) on GPU %s '
                'for %s, which neither the host nor the ledger holds: a '
                'stale vGPU' % (vgpu.vgpu_uuid, vgpu.type_id,
                                vgpu.vm_id or 'unknown', gpu.address, what),
                'nvidia-smi vgpu -q -i %s shows it and its VM; if that VM '
                'is no guest of this host any more, end the process that '
                'still holds it (the guest\'s QEMU, or its nvidia-vgpu-mgr '
                'if that outlived it): the manager frees the vGPU with it'
                % gpu.address))
    return out


def read_allocations(client, host: str,
                     gpu_of_provider: dict[str, str]) -> list[Allocation]:
    """The vGPU allocations of this host's GPU providers in Placement.

    :param gpu_of_provider: {provider name: GPU libvirt name} of the
        providers this host reports.
    """
    root = client.provider_by_name(host)
    if root is None:
        return []
    out = []
    for provider in client.providers_in_tree(root['uuid']):
        gpu = gpu_of_provider.get(provider['name'])
        if gpu is None:
            continue
        for consumer, body in sorted(client.provider_allocations(
                provider['uuid']).items()):
            amount = sum(body['resources'].values())
            if amount:
                out.append(Allocation(consumer, provider['name'], gpu,
                                      amount))
    return out


def guests_of(connection) -> dict[str, list[str]]:
    """{domain UUID: vGPU devices in its XML} through a libvirt connection.

    Read-only: ``libvirt.openReadOnly`` on a host, Nova's fake libvirt in
    tests (:func:`vgpu_nova_ext.devices.guest.domains`).
    """
    return guest_mod.domains(connection)[0]


def open_guests(uri: str) -> tuple[dict[str, list[str]] | None, str | None]:
    """The guests of ``uri`` (read-only), or None and why not."""
    try:
        import libvirt
    except ImportError:
        return None, ('guests\' domains not read: libvirt-python is not '
                      'installed here (install it, or run where '
                      'nova-compute runs)')
    try:
        connection = libvirt.openReadOnly(uri)
    except libvirt.libvirtError as exc:
        return None, 'guests\' domains not read: %s: %s' % (uri, exc)
    try:
        return guests_of(connection), None
    finally:
        connection.close()
