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
"""The options this project shares with Nova: ``[devices]`` and the groups
of each enabled type.

Nova registers these names on its global ``CONF``, and oslo.config refuses a
second registration of an option that differs in any attribute (help text
included). So they are registered here only where Nova has not registered
them (the commands, the vendordata service), with Nova's meanings, and read
by one function, :func:`read`, inside nova-compute and out.
"""

import contextlib
import dataclasses
import logging

import os_resource_classes as orc
from oslo_config import cfg

from vgpu_nova_ext.conf import loader
from vgpu_nova_ext.conf import raw
from vgpu_nova_ext import exception
from vgpu_nova_ext.host import mig
from vgpu_nova_ext.host import model
from vgpu_nova_ext.host import vgpu_scheduler

#: The largest inventory value Placement takes (its database's integer).
PLACEMENT_MAX_INT = 2147483647

DEVICES_GROUP = 'devices'
MDEV_CLASS_RE = r'^(VGPU|CUSTOM_[A-Z0-9_]+)$'

devices_group = cfg.OptGroup(
    name=DEVICES_GROUP,
    title='Mediated device types (shared with Nova)',
    help='Read from the same nova.conf as nova-compute reads, with the '
         'same meanings, so a configuration written for Nova\'s in-tree '
         'vGPU support works unchanged.')

devices_opts = [
    cfg.ListOpt(
        'enabled_mdev_types',
        default=[],
        deprecated_name='enabled_vgpu_types',
        help='The mediated device (mdev) types that this compute node '
             'offers, as their sysfs ids (``nvidia-35``, ``mtty-1``: the '
             'directory names under '
             '``/sys/class/mdev_bus/*/mdev_supported_types``). Each physical '
             'GPU serves one type. When more than one type is enabled, give '
             'each its own ``[mdev_<type>]`` group with ``device_addresses``; '
             'a type without ``device_addresses`` is the default for every '
             'GPU not listed under another type. The old name '
             '``enabled_vgpu_types`` is read too. Run ``vgpu-nova-ext '
             'check`` after a change to see which GPU serves which type.'),
]

# The options of each enabled type, in the dynamic group [mdev_<type>] (old
# name [vgpu_<type>]). They are registered per type once the enabled types
# are known; this list documents them in the sample configuration.
_TYPE_GROUP_HELP = (
    'One group per type listed in ``[devices] enabled_mdev_types``, named '
    '``[mdev_<type>]`` (for example ``[mdev_nvidia-35]``); the old name '
    '``[vgpu_<type>]`` is read too.')


def _type_opts(old_group: str | None = None) -> list[cfg.Opt]:
    return [
        cfg.ListOpt(
            'device_addresses',
            default=[],
            item_type=cfg.types.String(),
            deprecated_group=old_group,
            help='The physical GPUs that serve this type: PCI addresses '
                 '(``0000:84:00.0``; the domain may be left out and case '
                 'does not matter) or, for virtual parents such as the '
                 'kernel\'s mtty sample, the libvirt name (``mtty_mtty``). '
                 'For an SR-IOV GPU, the physical function\'s address takes '
                 'all its virtual functions; a virtual function\'s address '
                 'takes only that one. Leave it unset to make this type the '
                 'default for every GPU not listed under another type (only '
                 'one type may be the default). A GPU listed under two types '
                 'is a configuration error.'),
        cfg.StrOpt(
            'mdev_class',
            default=orc.VGPU,
            regex=MDEV_CLASS_RE,
            max_length=255,
            help='The Placement resource class of this type\'s inventory: '
                 '``VGPU``, or a custom class ``CUSTOM_<NAME>`` (upper case '
                 'letters, digits and underscores) so that flavors can ask '
                 'for this type by resource class instead of by trait.'),
        cfg.IntOpt(
            'max_instances',
            default=None,
            min=1,
            max=PLACEMENT_MAX_INT,
            help='The most mediated devices of this type on the whole host, '
                 'as in Nova. Unset: as many as the GPUs can hold. The cap '
                 'is spread over the GPUs of the type in address order, '
                 'never below the devices that already exist; '
                 '``vgpu-nova-ext check`` shows how it was spread.'),
        cfg.IntOpt(
            'max_unit',
            default=1,
            min=1,
            max=PLACEMENT_MAX_INT,
            deprecated_group=old_group,
            help='The most vGPUs of this type that one instance may take '
                 'from one GPU (the ``max_unit`` of the GPU provider\'s '
                 'inventory in Placement). Keep 1 unless the vGPU software '
                 'supports several vGPUs of this type in one guest on one '
                 'GPU: NVIDIA refuses two time-sliced vGPUs of most types in '
                 'one guest, and a scheduler that packs ``VGPU=2`` on one '
                 'GPU makes such boots fail late. Not read by Nova.'),
        cfg.IntOpt(
            'reserved',
            default=0,
            min=0,
            max=PLACEMENT_MAX_INT,
            deprecated_group=old_group,
            help='vGPUs of this type to keep back on every GPU that serves '
                 'it (the ``reserved`` of the inventory), for example for '
                 'devices managed outside OpenStack. Not read by Nova.'),
        cfg.StrOpt(
            'feature_type',
            choices=['0', '1', '2', '4'],
            deprecated_group=old_group,
            help='The gridd.conf ``FeatureType`` for guests holding this '
                 'type, instead of ``[vgpu_licensing] feature_type`` (1 '
                 'NVIDIA vGPU, 2 RTX Virtual Workstation, 4 Virtual Compute '
                 'Server, 0 unlicensed). Not read by Nova.'),
        cfg.StrOpt(
            'mig_gpu_instances',
            deprecated_group=old_group,
            help='For a MIG-backed type (``NVIDIA H200X-1-18C``, on NVIDIA\'s '
                 'vendor-specific VFIO framework): the GPU instances to carve '
                 'on each GPU serving it, in mig-parted\'s words, '
                 '``<profile>:<count>`` (for example ``1g.18gb:7``). The '
                 'profile is the type\'s own (H200X-1-18C runs on '
                 '``1g.18gb``). At start-up nova-compute turns MIG mode on, '
                 'enables the VFs and carves the instances on a GPU that '
                 'holds no vGPU; a GPU holding vGPUs keeps its instances '
                 '(``vgpu-nova-ext check`` says what to do). Unset: the '
                 'GPU instances already there are used as they are. Not '
                 'read by Nova.'),
        cfg.StrOpt(
            'vgpu_scheduler',
            choices=[(str(p), d) for p, d in (
                (vgpu_scheduler.Policy.BEST_EFFORT,
                 'each vGPU runs while it has work (NVIDIA\'s default)'),
                (vgpu_scheduler.Policy.EQUAL_SHARE,
                 'the running vGPUs share the GPU equally'),
                (vgpu_scheduler.Policy.FIXED_SHARE,
                 'each vGPU has a fixed share, whatever else runs'))],
            deprecated_group=old_group,
            help='NVIDIA\'s vGPU scheduler on each GPU serving this type '
                 '(time-sliced vGPUs). Set through NVML (``pip install '
                 'vgpu-nova-ext[nvml]``) while the GPU runs no vGPU, as '
                 'NVML allows; a GPU in use keeps its policy until it is '
                 'idle, and ``vgpu-nova-ext check`` says so. Each GPU '
                 'provider carries the policy in force as a trait '
                 '(``CUSTOM_VGPU_SCHED_FIXED_SHARE``) that flavors can '
                 'require. Unset: left as the driver has it. Not read by '
                 'Nova.'),
        cfg.IntOpt(
            'vgpu_scheduler_timeslice_ms',
            min=vgpu_scheduler.TIMESLICE_MS_RANGE[0],
            max=vgpu_scheduler.TIMESLICE_MS_RANGE[1],
            deprecated_group=old_group,
            help='The time slice of ``vgpu_scheduler`` equal_share or '
                 'fixed_share, in milliseconds (NVIDIA documents 1 to 30). '
                 'Unset: the driver\'s default. Not read by Nova.'),
    ]


@dataclasses.dataclass(frozen=True)
class TypeConfig:
    """The configuration of one enabled mdev type."""

    type_id: str
    group: str
    """The group as the operator wrote it (``mdev_x`` or ``vgpu_x``)."""
    device_addresses: tuple[str, ...]
    mdev_class: str = orc.VGPU
    max_instances: int | None = None
    max_unit: int = 1
    reserved: int = 0
    feature_type: str | None = None
    mig_layout: tuple[tuple[str, int], ...] = ()
    """``mig_gpu_instances`` as (profile, count), sorted; () when unset."""
    scheduler: vgpu_scheduler.SchedulerState | None = None
    """``vgpu_scheduler`` and its time slice; None when unset."""
    ignored_old: tuple[str, ...] = ()
    """Options written under ``[vgpu_<type>]`` that Nova reads only under
    ``[mdev_<type>]`` (so neither reads them)."""


@dataclasses.dataclass(frozen=True)
class DeviceConfig:
    """``[devices]`` and the type groups, read and checked."""

    types: tuple[TypeConfig, ...]
    option: str = 'enabled_mdev_types'
    """The option name as the operator wrote it."""
    duplicates: tuple[str, ...] = ()
    """Types listed more than once (kept once)."""

    @property
    def type_ids(self) -> tuple[str, ...]:
        return tuple(t.type_id for t in self.types)


_EXPECTED = {
    'mdev_class': 'expected VGPU or CUSTOM_<NAME> in upper case',
    'max_instances': 'expected a whole number of at least 1 and at most '
                     '2147483647 (Placement\'s largest), or unset',
    'max_unit': 'expected a whole number of at least 1 and at most '
                '2147483647 (Placement\'s largest)',
    'reserved': 'expected a whole number of at least 0 and at most '
                '2147483647 (Placement\'s largest)',
    'feature_type': 'expected 0, 1, 2 or 4',
    'mig_gpu_instances': 'expected <profile>:<count>, for example '
                         '1g.18gb:7',
    'device_addresses': 'expected a comma-separated list of addresses',
    'vgpu_scheduler': 'expected best_effort, equal_share or fixed_share',
    'vgpu_scheduler_timeslice_ms': 'expected a whole number of '
                                   'milliseconds from 1 to 30, with '
                                   'vgpu_scheduler equal_share or '
                                   'fixed_share',
    'enabled_mdev_types': 'expected a comma-separated list of type ids',
}


class _Values:
    """Reads option values, collecting every bad one before failing."""

    def __init__(self, conf: cfg.ConfigOpts, written) -> None:
        self.conf = conf
        self.written = written
        self.errors: list[str] = []

    def get(self, group: str, name: str, shown: str, default=None):
        try:
            return self.conf[group][name]
        except ValueError as exc:
            # oslo.config says "Value for option X from <location> is not
            # valid: <why>"; keep the why and name the option ourselves,
            # with the value as written.
            why = str(exc).rsplit('is not valid: ', 1)[-1]
            value = ''
            for section in (shown, group):
                if self.written.has_option(section, name):
                    value = ' = %r' % self.written.get(section, name)
                    break
            self.errors.append('[%s] %s%s: %s (%s)' % (
                shown, name, value, why,
                _EXPECTED.get(name, 'see the sample')))
            return default

    def layout(self, group: str, name: str, shown: str
               ) -> tuple[tuple[str, int], ...]:
        """A MIG layout option, parsed (mig-parted's words)."""
        text = self.get(group, name, shown)
        if not text:
            return ()
        try:
            return tuple(sorted(mig.parse_layout(text).items()))
        except ValueError as exc:
            self.errors.append('[%s] %s = %r: %s (%s)' % (
                shown, name, text, exc, _EXPECTED[name]))
            return ()

    def scheduler(self, group: str, shown: str
                  ) -> vgpu_scheduler.SchedulerState | None:
        """``vgpu_scheduler`` with its time slice, checked together."""
        policy = self.get(group, 'vgpu_scheduler', shown)
        ms = self.get(group, 'vgpu_scheduler_timeslice_ms', shown)
        if ms is not None and policy not in (
                vgpu_scheduler.Policy.EQUAL_SHARE,
                vgpu_scheduler.Policy.FIXED_SHARE):
            self.errors.append(
                '[%s] vgpu_scheduler_timeslice_ms = %d with vgpu_scheduler '
                '= %s: a time slice is for equal_share and fixed_share '
                'only (set one of them, or unset the time slice)' % (
                    shown, ms, policy or '(unset)'))
            return None
        if policy is None:
            return None
        return vgpu_scheduler.SchedulerState(vgpu_scheduler.Policy(policy),
                                             ms)

    def raise_if_any(self) -> None:
        if self.errors:
            raise exception.ConfigError(
                'invalid configuration: %s; fix these values in the '
                'configuration file' % '; '.join(self.errors))


@contextlib.contextmanager
def _quiet_deprecations():
    """Silence oslo.config's warnings about the old option names.

    The old names are part of the compatibility promise: reading them is
    not worth a warning on every command (``check`` notes them once).
    """
    logger = logging.getLogger('oslo_config.cfg')
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


#: The options Nova reads only under ``[mdev_<type>]`` (its
#: register_dynamic_opts gives the old group name to device_addresses
#: alone); written under ``[vgpu_<type>]`` they are ignored, here as there.
NEW_GROUP_ONLY = ('mdev_class', 'max_instances')


def register_opts(conf: cfg.ConfigOpts) -> None:
    """``[devices]``, unless Nova has registered it (then Nova's governs)."""
    loader.register_group(conf, devices_group)
    loader.register_tolerant(conf, devices_opts, group=DEVICES_GROUP)


def register_type_opts(conf: cfg.ConfigOpts, type_id: str) -> None:
    """The options of one type's group, Nova's own where it has them."""
    loader.register_tolerant(conf, _type_opts('vgpu_%s' % type_id),
                             group='mdev_%s' % type_id)


def read(conf: cfg.ConfigOpts) -> DeviceConfig:
    """``[devices]`` and the type groups from a parsed ``conf``.

    The one reader: of Nova's CONF inside nova-compute, of the commands'
    and the vendordata service's CONF outside it. Options come from every
    source ``conf`` was parsed from (``--config-file`` and
    ``--config-dir``) and from overrides.

    :raises ConfigError: a value has the wrong form; the message names the
        option as the operator wrote it and the fix.
    """
    with _quiet_deprecations():
        return _read(conf)


def _read(conf: cfg.ConfigOpts) -> DeviceConfig:
    register_opts(conf)
    sections = set(conf.list_all_sections())
    written = raw.read(loader.parsed_files(conf))
    devices = (set(written.options(DEVICES_GROUP))
               if written.has_section(DEVICES_GROUP) else set())
    option = ('enabled_vgpu_types' if 'enabled_vgpu_types' in devices
              and 'enabled_mdev_types' not in devices
              else 'enabled_mdev_types')
    values = _Values(conf, written)
    listed = values.get(DEVICES_GROUP, 'enabled_mdev_types', DEVICES_GROUP,
                        [])
    values.raise_if_any()
    type_ids: list[str] = []
    seen: set[str] = set()
    duplicates: list[str] = []
    for item in listed:
        item = item.strip()
        if not model.TYPE_ID_RE.match(item):
            raise exception.ConfigError(
                '[devices] %s: %r is not an mdev type id; write the type '
                'directory names from /sys/class/mdev_bus/*/'
                'mdev_supported_types, separated by commas (for example '
                '"nvidia-35, nvidia-36")' % (option, item))
        if item in seen:
            duplicates.append(item)
            continue
        seen.add(item)
        type_ids.append(item)

    types = []
    for type_id in type_ids:
        group = 'mdev_%s' % type_id
        old = 'vgpu_%s' % type_id
        shown = old if old in sections and group not in sections else group
        register_type_opts(conf, type_id)
        types.append(TypeConfig(
            type_id=type_id, group=shown,
            device_addresses=tuple(
                a.strip() for a in values.get(group, 'device_addresses',
                                              shown, [])),
            mdev_class=values.get(group, 'mdev_class', group, orc.VGPU),
            max_instances=values.get(group, 'max_instances', group),
            max_unit=values.get(group, 'max_unit', shown, 1),
            reserved=values.get(group, 'reserved', shown, 0),
            feature_type=values.get(group, 'feature_type', shown),
            mig_layout=values.layout(group, 'mig_gpu_instances', shown),
            scheduler=values.scheduler(group, shown),
            ignored_old=tuple(
                name for name in NEW_GROUP_ONLY
                if written.has_option(old, name))))
    values.raise_if_any()
    return DeviceConfig(types=tuple(types), option=option,
                        duplicates=tuple(duplicates))


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """For the sample: ``[devices]`` and the options of a type group."""
    type_group = cfg.OptGroup(name='mdev_<type>',
                              title='Options of one enabled mdev type',
                              help=_TYPE_GROUP_HELP)
    return [(devices_group, devices_opts), (type_group, _type_opts())]
