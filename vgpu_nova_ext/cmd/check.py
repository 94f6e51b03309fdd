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
"""``vgpu-nova-ext check``: the configuration against the host.

In the manner of oslo.upgradecheck (``nova-status upgrade check``): every
finding on a line of its own with its fix, and the exit code of the worst
finding: 0 all good, 1 warnings, 2 errors.
"""

import os

from oslo_upgradecheck import upgradecheck

from vgpu_nova_ext.cmd import common
from vgpu_nova_ext.cmd import host_checks
from vgpu_nova_ext.cmd import licensing_checks
from vgpu_nova_ext.cmd import nova_checks
from vgpu_nova_ext.devices import bring_up
from vgpu_nova_ext.devices import factory
from vgpu_nova_ext.devices import mig_layout
from vgpu_nova_ext.devices import scheduling
from vgpu_nova_ext import exception
from vgpu_nova_ext import findings
from vgpu_nova_ext.host import mig

_CODES = {findings.ERROR: upgradecheck.Code.FAILURE,
          findings.WARNING: upgradecheck.Code.WARNING}
_LABELS = {upgradecheck.Code.SUCCESS: 'OK',
           upgradecheck.Code.WARNING: 'WARNING',
           upgradecheck.Code.FAILURE: 'ERROR'}


def add_parser(sub) -> None:
    parser = sub.add_parser(
        'check', help='check the configuration against the host',
        description='Check [devices] and the per-type groups against the '
                    'GPUs of this host. Exit 0: all good; 1: warnings; '
                    '2: errors (nova-compute would refuse to start).')
    parser.set_defaults(func=run)


def _host_findings(args, plan) -> list:
    """State directory and privsep: what only a real host run needs."""
    if args.simulate or args.sysfs_root:
        return []
    conf = common.CONF
    # The ledger's own directory, <state_path>/<host>; its parent where
    # nova-compute has not made it yet.
    state = plan.state_root
    ledger_dir = factory.host_state_path(conf, plan.host, state)
    found = host_checks.state_dir_findings(
        ledger_dir if os.path.lexists(ledger_dir) else state)
    return found + host_checks.privsep_findings(
        conf.vgpu_nova_ext.host_backend,
        # The MIG context also runs sriov-manage after a reboot, and sets
        # the declared vGPU schedulers.
        mig=bool(plan.mig.gpus) or any(g.sriov for g in plan.snapshot.gpus)
        or any(t.scheduler for t in plan.device_config.types))


def run(args) -> int:
    try:
        plan = common.build_plan(args)
    except exception.VGPUNovaExtError as exc:
        print('ERROR    %s' % exc)
        print('Result: cannot check until this is fixed (exit 2)')
        return int(upgradecheck.Code.FAILURE)
    # nova-compute refuses to start on a ledger it cannot read.
    ledger = [findings.Finding(
        findings.STATE_LEDGER, findings.ERROR, '[vgpu_nova_ext] state_path',
        factory.host_state_path(common.CONF, plan.host, plan.state_root),
        str(plan.ledger_error),
        'as the message says, before nova-compute starts')] \
        if plan.ledger_error is not None else []
    schedulers = scheduling.plan(plan.device_config, plan.assignment)
    problems = (ledger + list(plan.mig.problems) +
                list(plan.assignment.problems) +
                scheduling.problems(schedulers) +
                licensing_checks.check(
        common.CONF, plan.device_config, plan.config_files) +
        nova_checks.check(plan.config_files) + _host_findings(args, plan))
    results = [upgradecheck.Result(_CODES[p.severity],
                                   '%s [%s]' % (p, p.code))
               for p in problems]
    print('Host %s: %s' % (plan.host, plan.backend))
    if plan.config_note:
        print('(%s)' % plan.config_note)
    for result in results:
        print('%-8s %s' % (_LABELS[result.code], result.details))
    for note in plan.assignment.notes:
        print('NOTE     %s' % note)
    for step in bring_up.plan(plan.device_config, plan.snapshot,
                              plan.ledger, {g.gpu for g in plan.mig.gpus}):
        print('BRING-UP %s: no virtual function (%s): %s' % (
            step.gpu, step.why, 'enabled at nova-compute\'s next start, '
            'or now by "vgpu-nova-ext bring-up"'
            if common.CONF.vgpu_nova_ext.bring_up_at_start else
            '[vgpu_nova_ext] bring_up_at_start is off: run "vgpu-nova-ext '
            'bring-up" or your own unit'))
    for gpu_plan in plan.mig.gpus:
        if gpu_plan.action == mig_layout.CARVE:
            print('CARVE    %s: GPU instances %s for %s, at nova-compute\'s '
                  'next start (MIG mode on, sriov-manage -e, then the '
                  'instances)%s' % (
                      gpu_plan.gpu, gpu_plan.words, gpu_plan.type_id,
                      '; shown below as carved' if args.simulate else ''))
    for step in schedulers:
        if step.action == scheduling.Action.APPLY:
            print('SCHEDULE %s: vGPU scheduler %s (in force %s), at '
                  'nova-compute\'s next start or periodic task' % (
                      step.gpu, step.declared.words(),
                      step.actual.words() if step.actual else 'not known'))
    for gpu in plan.assignment.gpus:
        layout = gpu.gpu.mig.layout() if gpu.gpu.mig and \
            gpu.gpu.mig.enabled else None
        print('OK       %s (%s) serves %s%s: %d of %d in use, %s%s%s' % (
            gpu.gpu.address, gpu.gpu.name, gpu.type_id,
            ' (%s)' % gpu.type_name if gpu.type_name else '', gpu.used,
            gpu.capacity, 'listed in device_addresses'
            if gpu.source == 'device_addresses' else 'default type',
            ', MIG GPU instances %s' % mig.words(layout) if layout
            else '', ', vGPU scheduler %s' % gpu.gpu.vgpu_scheduler.words()
            if gpu.gpu.vgpu_scheduler else ''))
    worst = max((r.code for r in results),
                default=upgradecheck.Code.SUCCESS)
    errors = sum(1 for r in results if r.code == upgradecheck.Code.FAILURE)
    print('Result: %d error(s), %d warning(s) (exit %d)' % (
        errors, len(results) - errors, int(worst)))
    return int(worst)
