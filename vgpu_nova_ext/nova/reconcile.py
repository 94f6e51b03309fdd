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
"""The periodic reconcile: host, ledger and Nova's allocations agree.

At start-up (before Nova resumes guests) and every periodic task.
"""

from nova import context as nova_context
from oslo_log import log as logging

from vgpu_nova_ext.devices import guest as guest_mod
from vgpu_nova_ext.devices import ledger as ledger_mod
from vgpu_nova_ext.nova import extension

LOG = logging.getLogger(__name__)


def reconcile(ext: extension.Extension, host, virtapi,
              periodic: bool = False) -> None:
    """Make host and ledger agree.

    At start-up (before Nova resumes guests) and every periodic task:
    devices come back after a host reboot, half-done work is finished,
    devices that guests already use are adopted, devices of instances
    gone from this host are freed after the grace period.
    """
    # The guests' XML tells which domain uses which device: needed to
    # adopt a device the ledger does not know and to spot a guest using
    # another's. At start-up it is read whatever the host holds; in a
    # periodic task only when the host holds a device the ledger does
    # not know, since the domains' UUIDs are enough to tell which
    # consumers live (reading hundreds of domains' XML every minute is
    # most of the cost of the task otherwise). This is the periodic
    # task's one scan of the host: the reconcile and the provider tree
    # update that follows reuse it. A quiet periodic task (devices/quiet.py)
    # does none of it.
    connection = host.get_connection()
    signature = listed = None
    if periodic:
        listed, every_domain = guest_mod.domains(connection, False)
        signature = (ext.allocator.view.signature(), ext.ledger.version(),
                     frozenset(listed),
                     frozenset(ext.allocator.targets.items()))
        if ext.quiet.unchanged(signature):
            LOG.debug('vGPU reconcile: nothing changed since the last one')
            return
    on_host = {d.device_id for d in ext.allocator.scan().mediated_devices}
    read_xml = not periodic or bool(
        on_host - {e.device_id for e in ext.ledger.all()})
    if read_xml:
        domains, every_domain = guest_mod.domains(connection, True)
    else:
        domains = listed
    live, asked = _live_consumers(ext, host, virtapi, domains)
    # Settled: what decided this pass can change only with the signature.
    ext.quiet.full_pass(signature, settled=(
        signature is not None and every_domain and not asked))
    # Only with every domain read is a device no domain uses unused.
    for action in ext.allocator.reconcile(
            live_consumers=live, guest_devices=domains,
            adopt_unused=every_domain and read_xml,
            scan_max_age=extension.SCAN_REUSE_SECONDS):
        # Foreign devices are news at start-up, not every minute.
        log = LOG.debug if periodic and action.kind == 'foreign' \
            else LOG.info
        log('vGPU reconcile: %s %s: %s', action.kind, action.device_id,
            action.detail)


def _live_consumers(ext: extension.Extension, host, virtapi,
                    guests: dict[str, list[str]]
                    ) -> tuple[set[str] | None, bool]:
    """Consumers whose devices stay, and whether Placement was asked.

    None for the consumers: cannot tell this time.

    Those with a domain here and, when the ledger names others, those
    that hold allocations on this compute node's providers in
    Placement: what Nova allocated is what a device stands for. A long
    live migration keeps its destination's devices (the instance holds
    the destination's allocations); one that failed or was abandoned
    does not (Nova gave the allocations back to the source).

    Placement is asked only when a consumer in the ledger has no
    domain here, which is rare: on most periodic tasks nothing is
    asked. Not Nova's database: a driver in nova-compute reads it
    through the conductor, and the read would hold up the periodic
    task that calls it (in Nova's test harness it waits on the
    harness's cell lock, which a test running periodic tasks from a
    live migration holds: a deadlock seen under load).
    """
    live = set(guests)
    ledger = ext.ledger
    unknown = {ledger.instance_of(e.consumer) or e.consumer
               for e in ledger.in_state(ledger_mod.ACTIVE,
                                        ledger_mod.CREATING)
               if e.consumer is not None} - live
    if not unknown:
        return live, False
    reportclient = virtapi.reportclient
    context = nova_context.get_admin_context()
    try:
        here = {p['uuid'] for p in reportclient.get_providers_in_tree(
            context, host.get_node_uuid())}
        for consumer in sorted(unknown):
            allocations = reportclient.get_allocs_for_consumer(
                context, consumer)['allocations']
            if here & set(allocations):
                live.add(consumer)
    except Exception as exc:
        # Nothing is judged gone on a failed read.
        LOG.warning('cannot ask Placement which vGPU consumers hold '
                    'allocations here (%s); no device is freed as an '
                    'orphan this time', exc)
        return None, True
    return live, True
