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
"""``vgpu-nova-ext devices`` and ``vgpu-nova-ext reconcile``."""

import dataclasses
import json
import sys

from vgpu_nova_ext.cmd import common
from vgpu_nova_ext.devices import ledger as ledger_mod
from vgpu_nova_ext.devices import mig_layout
from vgpu_nova_ext import exception
from vgpu_nova_ext.host import address
from vgpu_nova_ext.host import vgpu_params
from vgpu_nova_ext import metrics


def add_parsers(sub) -> None:
    parser = sub.add_parser(
        'devices', help='list the vGPU devices of this host',
        description='Every vGPU device on the host and in the ledger: its '
                    'GPU and type, its owner (an instance, free, or '
                    'foreign: not made by vgpu-nova-ext), and whether host '
                    'and ledger agree.')
    parser.add_argument('--format', choices=('table', 'json'),
                        default='table')
    parser.set_defaults(func=run_devices)
    parser = sub.add_parser(
        'reconcile', help='make the host and the ledger agree',
        description='Finish or undo what a crash left half done, make '
                    'again (same UUID, same GPU) the devices a host reboot '
                    'removed. Devices not made by vgpu-nova-ext are left '
                    'alone.')
    parser.add_argument('--dry-run', action='store_true',
                        help='print what would change, change nothing')
    parser.add_argument('--remove-foreign', metavar='DEVICE', nargs='+',
                        help='also remove these devices that vgpu-nova-ext '
                             'did not make (stale ones "devices" lists as '
                             'foreign); check first that no guest uses them')
    parser.set_defaults(func=run_reconcile, bring_up=False)
    parser = sub.add_parser(
        'bring-up', help='after a host reboot: VFs, MIG layouts, devices',
        description='What nova-compute\'s start does after a host reboot, '
                    'for a systemd unit ordered before it '
                    '(etc/systemd/vgpu-nova-ext-bring-up.service): enable '
                    'the VFs of the SR-IOV GPUs this host serves that have '
                    'none, carve the MIG layouts, then make again every '
                    'device the ledger gives to a guest (same UUID or VF, '
                    'same type). Idempotent: running it and nova-compute\'s '
                    'start both is harmless. Exit 1 if a GPU could not be '
                    'brought back (the others are).')
    parser.add_argument('--dry-run', action='store_true',
                        help='print what would change, change nothing')
    parser.set_defaults(func=run_reconcile, bring_up=True,
                        remove_foreign=None)


def rows(snapshot, entries, params=None) -> list[dict]:
    """The host's devices and the ledger's, for people and JSON.

    :param params: {device: its vGPU plugin parameters}, where read.
    """
    mig_gpus = {g.name for g in snapshot.gpus if g.mig and g.mig.enabled}
    out = []
    for row in metrics.device_rows(snapshot, entries,
                                   lambda consumer: None):
        out.append({
            'device': row.device, 'kind': row.kind, 'gpu': row.gpu,
            'parent': row.parent, 'type': row.type_id,
            'owner': (row.state if row.state in ('foreign', ledger_mod.FREE)
                      else row.consumer),
            'ledger': None if row.state == 'foreign' else row.state,
            'host': 'present' if row.present else 'missing',
            # The GPU instance a MIG-backed vGPU runs on, as the VF says.
            'gpu_instance': row.gpu_instance if row.gpu in mig_gpus
            else None,
            # NVIDIA's nvidia/vgpu_params; None: none (not NVIDIA's, or
            # not on the host).
            'vgpu_params': _params_text((params or {}).get(row.device)),
        })
    return out


def _params_text(pairs) -> str | None:
    return None if pairs is None else vgpu_params.text(pairs)


def run_devices(args) -> int:
    plan = common.build_plan(args, device_params=True)
    ledger = common.read_ledger(args, plan)
    entries = ledger.all()
    found = rows(plan.snapshot, entries, plan.device_params)
    manager = metrics.manager_rows(plan.snapshot, entries, ledger.links())
    if args.format == 'json':
        json.dump({'host': plan.host, 'devices': found,
                   # NVML's active vGPUs; null where NVML was not read.
                   'manager_vgpus': None if manager is None else [
                       dataclasses.asdict(r) for r in manager]},
                  sys.stdout, indent=2)
        print()
        return 0
    print('Host %s: %d device(s)' % (plan.host, len(found)))
    if found:
        mig = any(r['gpu_instance'] is not None for r in found)
        params = any(r['vgpu_params'] for r in found)
        print(common.format_table(
            ['DEVICE', 'GPU', 'TYPE', 'OWNER', 'LEDGER', 'HOST'] +
            (['GPU INSTANCE'] if mig else []) +
            (['VGPU PARAMS'] if params else []),
            [[r['device'], r['gpu'], r['type'], r['owner'],
              r['ledger'] or '-', r['host']] + (
                  [str(r['gpu_instance']) if r['gpu_instance'] is not None
                   else '-'] if mig else []) + (
                  [r['vgpu_params'] or '-'] if params else [])
             for r in found]))
    if manager:
        stale = sum(r.stale for r in manager)
        print()
        print('NVIDIA\'s vGPU manager (NVML) runs %d vGPU(s), %d stale%s'
              % (len(manager), stale, ' (vgpu-nova-ext audit --ownership '
                 'says what to do)' if stale else ''))
        print(common.format_table(
            ['VGPU', 'GPU', 'TYPE', 'VM', 'DEVICE', 'STALE'],
            [[r.vgpu, r.gpu_address, r.type_id, r.vm or '-',
              r.device or '-', 'yes' if r.stale else 'no']
             for r in manager]))
    return 0


def run_reconcile(args) -> int:
    for device_id in args.remove_foreign or ():
        # Checked before the host is opened: nothing is made or changed.
        if not address.is_device_id(device_id):
            raise exception.ClaimError(
                '--remove-foreign %r is not a device id as the kernel names '
                'devices (an mdev UUID, or a virtual function\'s PCI address '
                'DDDD:BB:SS.F); give it as "vgpu-nova-ext devices" lists it; '
                'nothing was removed' % (device_id,))
    plan = common.build_plan(args)
    with common.allocator(args, plan) as al:
        # First: a device id that is not the host's stops the command
        # before anything changed.
        if args.remove_foreign and not args.dry_run:
            for device_id in al.remove_foreign(args.remove_foreign):
                print('did   remove-foreign %s' % device_id)
        left = []
        if args.bring_up:
            steps, left = al.bring_up(plan.device_config,
                                      dry_run=args.dry_run)
            failed = {p.where for p in left}
            for step in steps:
                if 'host GPU %s' % step.gpu not in failed:
                    print('%-5s %-14s %s: %s' % (
                        'would' if args.dry_run else 'did', 'enable-vfs',
                        step.gpu, step.why))
            for problem in left:
                print('%-5s %-14s %s' % ('leave', problem.code, problem))
        carving = al.carve_mig_layouts(plan.device_config,
                                       dry_run=args.dry_run)
        for gpu_plan in carving.gpus:
            if gpu_plan.action == mig_layout.CARVE:
                print('%-5s %-14s %s: GPU instances %s' % (
                    'would' if args.dry_run else 'did', 'carve',
                    gpu_plan.gpu, gpu_plan.words))
        for problem in carving.problems:
            print('%-5s %-14s %s' % ('leave', problem.code, problem))
        actions = al.reconcile(dry_run=args.dry_run)
    if not actions:
        print('Host %s: host and ledger agree; nothing to do' % plan.host)
    for action in actions:
        if action.kind in ('foreign', 'conflict'):
            verb = 'leave'
        else:
            verb = 'would' if args.dry_run else 'did'
        print('%-5s %-14s %s: %s' % (verb, action.kind, action.device_id,
                                     action.detail))
    return 1 if left else 0
