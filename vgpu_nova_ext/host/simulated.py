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
"""A simulated host, described by a profile file (YAML).

The simulated backend lays the profile out as a kernel-style sysfs tree in a
private temporary directory (see :mod:`vgpu_nova_ext.host.layout`) and reads
it back with the sysfs reader, so the simulated host and a real one share
the read path. Available instances follow the kernel's rules:

- ``time-sliced`` GPUs hold one vGPU type at a time; a type's available
  instances are its per-GPU maximum less the devices of it;
- ``sriov`` GPUs have one mdev parent per virtual function; a free VF shows
  1 for a type while the GPU can take one more device of it, 0 otherwise;
- ``pooled`` devices (the mtty sample) share a pool of units across types.
"""

import contextlib
import dataclasses
import errno
import fcntl
import importlib.resources
import json
import os
import re
import shutil
import tempfile
import threading
import uuid as uuidlib

import yaml

from vgpu_nova_ext.conf import loader
from vgpu_nova_ext import exception
from vgpu_nova_ext.host import address
from vgpu_nova_ext.host import layout
from vgpu_nova_ext.host import mig
from vgpu_nova_ext.host import model
from vgpu_nova_ext.host import nvml
from vgpu_nova_ext.host import simulated_mig
from vgpu_nova_ext.host import sysfs
from vgpu_nova_ext.host import vfio
from vgpu_nova_ext.host import writes

TIME_SLICED = 'time-sliced'
SRIOV = 'sriov'
POOLED = 'pooled'
SHARING_MODES = (TIME_SLICED, SRIOV, POOLED)
# Row form of a type: id, name, framebuffer MiB, display heads, frame rate
# limit, max resolution, max instances per GPU (optional), and in NVIDIA's
# mixed-size mode (optional; the same when not given).
_ROW_FIELDS = ('id', 'name', 'framebuffer_mb', 'num_heads', 'frl_config',
               'max_resolution', 'max_instance', 'max_instance_mixed')
_PROFILE_NAME_RE = re.compile(r'^[a-z0-9][a-z0-9-]*$')
# A type id becomes a directory name under mdev_supported_types: the
# kernel's own names are of this form, and nothing else may be joined.
_TYPE_ID_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$')


class _ProfileLoader(yaml.SafeLoader):
    """YAML without aliases.

    A profile needs none, and nested aliases ("billion laughs") expand
    beyond any memory as the profile is read.
    """

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, 'aliases (*%s) are not allowed in a profile; '
                'write the values out' % event.anchor, event.start_mark)
        return super().compose_node(parent, index)


_PROFILE_PACKAGE = 'vgpu_nova_ext.host.profiles'


@dataclasses.dataclass(frozen=True)
class TypeSpec:
    id: str
    name: str
    max_instance: int
    device_api: str = 'vfio-pci'
    framebuffer_mb: int | None = None
    num_heads: int | None = None
    frl_config: int | None = None
    max_resolution: str | None = None
    units: int = 1
    max_per_vm: int | None = None
    """What the simulated NVML says of the type's most per VM."""
    gpu_instance_profile: str | None = None
    """A MIG-backed type's GPU instance profile (``1g.18gb``)."""
    max_per_gi: int = 1
    """A MIG-backed type's most vGPUs on one GPU instance."""
    max_instance_mixed: int | None = None
    """The most per GPU in NVIDIA's mixed-size mode; None: max_instance."""

    def most(self, mixed_size: bool) -> int:
        """The most devices of this type one GPU holds, in its mode."""
        if mixed_size and self.max_instance_mixed is not None:
            return self.max_instance_mixed
        return self.max_instance

    @property
    def description(self) -> str | None:
        if self.framebuffer_mb is None:
            return None
        # The fields and their order are those of NVIDIA's vGPU manager.
        return ('num_heads=%s, frl_config=%s, framebuffer=%dM, '
                'max_resolution=%s, max_instance=%d' % (
                    self.num_heads, self.frl_config, self.framebuffer_mb,
                    self.max_resolution, self.max_instance))


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    sharing: str
    types: tuple[TypeSpec, ...]
    vendor_id: str = '0x10de'
    device_id: str = '0x0000'
    sriov_vfs: int = 0
    pool_units: int = 0
    vfio: bool = False
    """NVIDIA's vendor-specific VFIO instead of the mdev bus (sriov)."""
    mig_profiles: tuple[mig.GIProfile, ...] = ()
    """The GPU instance profiles of a MIG-capable model."""

    def mig_profile_map(self) -> dict[str, mig.GIProfile]:
        return {p.name: p for p in self.mig_profiles}

    def type(self, type_id: str) -> TypeSpec | None:
        return next((t for t in self.types if t.id == type_id), None)


@dataclasses.dataclass(frozen=True)
class GPUSpec:
    model: ModelSpec
    address: str | None = None
    """PCI address; None for a virtual device."""
    virtual_path: str | None = None
    """Path below /sys/devices/virtual, for virtual devices."""
    sysfs_path: str | None = None
    """Path below /sys/devices, to mimic a real host's bridges."""
    mixed_size: bool = False
    """NVIDIA's mixed-size (heterogeneous) mode: ``nvidia-smi vgpu -shm 1``."""
    gpu_instances: tuple[tuple[str, int], ...] = ()
    """GPU instances carved before the host is opened (MIG mode on)."""

    @property
    def name(self) -> str:
        if self.virtual_path:
            return address.virtual_name(self.virtual_path)
        return address.libvirt_name(self.address)

    def vf_addresses(self) -> list[str]:
        """VF addresses as NVIDIA GPUs place them: offset 4, stride 1."""
        domain, bus, rest = self.address.split(':')
        slot = int(rest.split('.')[0], 16)
        out = []
        for index in range(self.model.sriov_vfs):
            routing_id = slot * 8 + 4 + index
            out.append('%s:%s:%02x.%d' % (domain, bus, routing_id // 8,
                                          routing_id % 8))
        return out


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    description: str
    gpus: tuple[GPUSpec, ...]
    mediated_devices: tuple[model.MediatedDevice, ...] = ()
    example_config: str | None = None
    source: str | None = None
    text: str = ''
    """The YAML it was read from (kept with a simulated host)."""


def builtin_profiles() -> list[str]:
    files = importlib.resources.files(_PROFILE_PACKAGE)
    return sorted(f.name[:-5] for f in files.iterdir()
                  if f.name.endswith('.yaml'))


def load_profile(name_or_path: str) -> Profile:
    """Load a built-in profile by name, or a profile file by path."""
    if _PROFILE_NAME_RE.match(name_or_path) and not os.path.exists(
            name_or_path):
        if name_or_path not in builtin_profiles():
            raise exception.ProfileError(
                'no built-in simulated host profile named %r; the built-in '
                'ones are: %s (or give the path of a YAML profile)' % (
                    name_or_path, ', '.join(builtin_profiles())))
        resource = importlib.resources.files(_PROFILE_PACKAGE).joinpath(
            name_or_path + '.yaml')
        return parse_profile(resource.read_text(), name_or_path)
    try:
        text = loader.read_text(name_or_path, 'simulated host profile')
    except exception.ConfigError as exc:
        raise exception.ProfileError(str(exc))
    return parse_profile(text, name_or_path)


class _Reader:
    """Typed access to a YAML mapping, naming the key on every error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> exception.ProfileError:
        return exception.ProfileError(
            'simulated host profile %s: %s: %s' % (self.source, where,
                                                   problem))

    def mapping(self, value, where: str) -> dict:
        if not isinstance(value, dict):
            raise self.fail(where, 'expected a mapping, got %r' % (value,))
        return value

    def get(self, data: dict, key: str, kind: type, where: str,
            default=dataclasses.MISSING):
        if key not in data or data[key] is None:
            if default is dataclasses.MISSING:
                raise self.fail('%s.%s' % (where, key), 'is required')
            return default
        value = data[key]
        if kind is int and (isinstance(value, bool)
                            or not isinstance(value, int) or value < 0):
            raise self.fail('%s.%s' % (where, key),
                            'expected a whole number >= 0, got %r' % (value,))
        if kind is str:
            value = str(value) if isinstance(value, (int, float)) else value
        if not isinstance(value, kind):
            raise self.fail('%s.%s' % (where, key), 'expected %s, got %r' % (
                kind.__name__, value))
        return value


def parse_profile(text: str, source: str) -> Profile:
    r = _Reader(source)
    try:
        data = yaml.load(text, Loader=_ProfileLoader)
    except yaml.YAMLError as exc:
        raise exception.ProfileError(
            'simulated host profile %s is not valid YAML: %s' % (
                source, str(exc).replace('\n', ' ')))
    except RecursionError:
        raise exception.ProfileError(
            'simulated host profile %s nests its values deeper than any '
            'profile does (a list or mapping inside another, thousands of '
            'levels down); a profile is a few levels deep: models, gpus, '
            'mediated_devices' % source)
    data = r.mapping(data, 'top level')
    models = {name: _parse_model(r, name, spec) for name, spec in
              r.get(data, 'models', dict, 'top level').items()}
    gpus = []
    for index, item in enumerate(r.get(data, 'gpus', list, 'top level')):
        where = 'gpus[%d]' % index
        item = r.mapping(item, where)
        model_name = r.get(item, 'model', str, where)
        if model_name not in models:
            raise r.fail(where + '.model', '%r is not one of the models '
                         'defined under "models" (%s)' % (
                             model_name, ', '.join(sorted(models))))
        virtual = _relative_path(r, item, 'virtual', where)
        pci = None
        if virtual is None:
            raw = r.get(item, 'address', str, where)
            pci = address.normalize_pci_address(raw)
            if pci is None:
                raise r.fail(where + '.address', '%r is not a PCI address '
                             '(DDDD:BB:SS.F)' % raw)
        mixed = r.get(item, 'mixed_size', bool, where, False)
        if mixed and not models[model_name].vfio:
            raise r.fail(where + '.mixed_size', 'mixed-size mode is '
                         'simulated on vendor-VFIO models (vfio: true) only')
        carved = r.get(item, 'gpu_instances', str, where, '')
        try:
            layout_ = mig.parse_layout(carved)
            if layout_:
                mig.fit(models[model_name].mig_profile_map(), layout_)
        except ValueError as exc:    # LayoutError too
            raise r.fail(where + '.gpu_instances', str(exc))
        gpus.append(GPUSpec(model=models[model_name], address=pci,
                            virtual_path=virtual,
                            sysfs_path=_relative_path(r, item, 'sysfs_path',
                                                      where),
                            mixed_size=mixed,
                            gpu_instances=tuple(sorted(layout_.items()))))
    if not gpus:
        raise r.fail('gpus', 'a host needs at least one GPU')
    names = [g.name for g in gpus]
    if len(set(names)) != len(names):
        raise r.fail('gpus', 'the same device is listed twice')
    profile = Profile(
        name=os.path.basename(source).rsplit('.', 1)[0],
        description=r.get(data, 'description', str, 'top level', ''),
        gpus=tuple(gpus),
        mediated_devices=tuple(_parse_mdevs(r, data, gpus)),
        example_config=r.get(data, 'example_config', str, 'top level', None),
        source=r.get(data, 'source', str, 'top level', None), text=text)
    # Lay out once to check the devices against the kernel's rules.
    KernelModel(profile).available()
    return profile


def _relative_path(r: _Reader, item: dict, key: str, where: str
                   ) -> str | None:
    """A path below the simulated ``sys/``, never out of it."""
    value = r.get(item, key, str, where, None)
    if value is not None and (
            not value or os.path.isabs(value) or '\0' in value
            or any(part in ('', '.', '..') for part in value.split('/'))):
        raise r.fail('%s.%s' % (where, key), '%r is not a relative path '
                     'below sys/ (no "..", no leading "/")' % value)
    return value


def _parse_model(r: _Reader, name: str, spec) -> ModelSpec:
    where = 'models.%s' % name
    spec = r.mapping(spec, where)
    sharing = r.get(spec, 'sharing', str, where)
    if sharing not in SHARING_MODES:
        raise r.fail(where + '.sharing', '%r is not one of %s' % (
            sharing, ', '.join(SHARING_MODES)))
    framebuffer = r.get(spec, 'framebuffer_mb', int, where, None)
    types = []
    for index, row in enumerate(r.get(spec, 'types', list, where)):
        twhere = '%s.types[%d]' % (where, index)
        if isinstance(row, list):
            if not 3 <= len(row) <= len(_ROW_FIELDS):
                raise r.fail(twhere, 'a row is [%s], got %r' % (
                    ', '.join(_ROW_FIELDS), row))
            row = dict(zip(_ROW_FIELDS, row))
        row = r.mapping(row, twhere)
        type_fb = r.get(row, 'framebuffer_mb', int, twhere, None)
        max_instance = r.get(row, 'max_instance', int, twhere, None)
        if max_instance is None:
            if sharing == POOLED:
                max_instance = (r.get(spec, 'pool_units', int, where)
                                // r.get(row, 'units', int, twhere, 1))
            elif framebuffer and type_fb:
                max_instance = framebuffer // type_fb
            else:
                raise r.fail(twhere, 'give max_instance, or framebuffer_mb '
                             'both here and on the model')
        type_id = r.get(row, 'id', str, twhere)
        if not _TYPE_ID_RE.match(type_id):
            raise r.fail(twhere + '.id', '%r is not a type id as the kernel '
                         'names them (letters, digits, "_.:-", for example '
                         'nvidia-35)' % type_id)
        types.append(TypeSpec(
            id=type_id,
            name=r.get(row, 'name', str, twhere),
            max_instance=max_instance,
            device_api=r.get(row, 'device_api', str, twhere, 'vfio-pci'),
            framebuffer_mb=type_fb,
            num_heads=r.get(row, 'num_heads', int, twhere, None),
            frl_config=r.get(row, 'frl_config', int, twhere, None),
            max_resolution=r.get(row, 'max_resolution', str, twhere, None),
            units=r.get(row, 'units', int, twhere, 1),
            max_per_vm=r.get(row, 'max_per_vm', int, twhere, None),
            gpu_instance_profile=r.get(row, 'gpu_instance_profile', str,
                                       twhere, None),
            max_per_gi=r.get(row, 'max_per_gi', int, twhere, 1),
            max_instance_mixed=r.get(row, 'max_instance_mixed', int, twhere,
                                     None)))
    if not types:
        raise r.fail(where + '.types', 'a model needs at least one type')
    vfs = r.get(spec, 'sriov_vfs', int, where, 0)
    if (sharing == SRIOV) != (vfs > 0):
        raise r.fail(where + '.sriov_vfs',
                     'set it (> 0) exactly when sharing is sriov')
    use_vfio = r.get(spec, 'vfio', bool, where, False)
    if use_vfio and sharing != SRIOV:
        raise r.fail(where + '.vfio', 'NVIDIA\'s vendor VFIO needs sharing: '
                     'sriov')
    if use_vfio and any(vfio.type_number(t.id) is None for t in types):
        raise r.fail(where + '.types', 'vendor VFIO type ids are '
                     'nvidia-<number>')
    profiles = []
    for index, row in enumerate(r.get(spec, 'mig_profiles', list, where,
                                      [])):
        pwhere = '%s.mig_profiles[%d]' % (where, index)
        if not (isinstance(row, list) and len(row) == 4
                and mig.is_profile_name(str(row[0]))
                and all(isinstance(v, int) for v in row[1:3])
                and isinstance(row[3], list) and row[3]
                and all(isinstance(v, int) and 0 <= v < mig.SLICES
                        for v in row[3])):
            raise r.fail(pwhere, 'a row is [name, profile id, memory '
                         'slices, [placements]], got %r' % (row,))
        profiles.append(mig.GIProfile(name=row[0], id=row[1], size=row[2],
                                      placements=tuple(row[3])))
    if profiles and not use_vfio:
        raise r.fail(where + '.mig_profiles', 'MIG is simulated on '
                     'vendor-VFIO models (vfio: true) only')
    names = {p.name for p in profiles}
    for t in types:
        if t.gpu_instance_profile and t.gpu_instance_profile not in names:
            raise r.fail(where + '.types', '%s runs on GPU instance profile '
                         '%r, which is not under mig_profiles' % (
                             t.id, t.gpu_instance_profile))
    return ModelSpec(name=name, sharing=sharing, types=tuple(types),
                     vendor_id=r.get(spec, 'vendor_id', str, where, '0x10de'),
                     device_id=r.get(spec, 'device_id', str, where, '0x0000'),
                     sriov_vfs=vfs,
                     pool_units=r.get(spec, 'pool_units', int, where, 0),
                     vfio=use_vfio, mig_profiles=tuple(profiles))


def _parse_mdevs(r: _Reader, data: dict, gpus: list[GPUSpec]):
    parents = {}
    for gpu in gpus:
        if gpu.model.sharing == SRIOV:
            for vf in gpu.vf_addresses():
                parents[vf] = (address.libvirt_name(vf), gpu)
        else:
            parents[gpu.address or gpu.name] = (gpu.name, gpu)
    for index, item in enumerate(
            r.get(data, 'mediated_devices', list, 'top level', [])):
        where = 'mediated_devices[%d]' % index
        item = r.mapping(item, where)
        raw_uuid = r.get(item, 'uuid', str, where, None)
        uuid = None
        if raw_uuid is not None:
            try:
                uuid = str(uuidlib.UUID(raw_uuid))
            except ValueError:
                raise r.fail(where + '.uuid', '%r is not a UUID' % raw_uuid)
        raw_parent = r.get(item, 'parent', str, where)
        key = address.normalize_pci_address(raw_parent) or raw_parent
        if key not in parents:
            raise r.fail(where + '.parent', '%r is not a parent device of '
                         'this host (%s)' % (raw_parent,
                                             ', '.join(sorted(parents))))
        parent_name, gpu = parents[key]
        if uuid is None and not gpu.model.vfio:
            raise r.fail(where + '.uuid', 'is required')
        type_id = r.get(item, 'type', str, where)
        if gpu.model.type(type_id) is None:
            raise r.fail(where + '.type', '%r is not a type of model %s' % (
                type_id, gpu.model.name))
        if gpu.model.vfio:
            # On vendor VFIO the device is the VF itself.
            yield model.MediatedDevice(uuid=key, parent=parent_name,
                                       type_id=type_id, kind=model.VF)
            continue
        yield model.MediatedDevice(uuid=uuid, parent=parent_name,
                                   type_id=type_id)


def initial_mig_states(profile: Profile) -> dict[str, dict]:
    """The MIG state of each GPU carved in the profile (MIG mode on)."""
    out = {}
    for gpu in profile.gpus:
        if not gpu.gpu_instances:
            continue
        state = {'mig': True, 'instances': [], 'vgpus': {}}
        profiles = gpu.model.mig_profile_map()
        for name, _ in mig.fit(profiles, dict(gpu.gpu_instances)):
            simulated_mig.create_instance(state, profiles, name)
        out[gpu.address] = state
    return out


class KernelModel:
    """Computes ``available_instances`` as the kernel and driver would."""

    def __init__(self, profile: Profile,
                 devices: tuple[model.MediatedDevice, ...] | None = None,
                 mig_states: dict[str, dict] | None = None):
        self.profile = profile
        self.devices = (profile.mediated_devices if devices is None
                        else devices)
        #: {GPU address: MIG state} (simulated_mig's form).
        self.mig_states = (initial_mig_states(profile) if mig_states is None
                           else mig_states)

    def _parents(self, gpu: GPUSpec) -> list[tuple[str, str | None]]:
        """(parent name, PCI address or None) of each mdev parent."""
        if gpu.model.sharing == SRIOV:
            return [(address.libvirt_name(vf), vf)
                    for vf in gpu.vf_addresses()]
        return [(gpu.name, gpu.address)]

    def available(self) -> dict[str, dict[str, int]]:
        """{parent name: {type id: available instances}}."""
        result = {}
        for gpu in self.profile.gpus:
            parents = [name for name, _ in self._parents(gpu)]
            result.update(self.gpu_available(
                gpu, [d for d in self.devices if d.parent in parents]))
        return result

    def gpu_available(self, gpu: GPUSpec,
                      on_gpu: list[model.MediatedDevice]
                      ) -> dict[str, dict[str, int]]:
        """{parent name: {type id: available}} of one GPU."""
        counts: dict[str, int] = {}
        for dev in on_gpu:
            counts[dev.type_id] = counts.get(dev.type_id, 0) + 1
        state = self.mig_states.get(gpu.address)
        if state is not None and state['mig']:
            # MIG mode: MIG-backed types only, where an instance has room.
            result = {}
            for parent, _ in self._parents(gpu):
                busy = any(d.parent == parent for d in on_gpu)
                result[parent] = {t.id: int(
                    not busy and t.gpu_instance_profile is not None
                    and simulated_mig.instance_with_room(
                        state, t.gpu_instance_profile, t.max_per_gi)
                    is not None) for t in gpu.model.types}
            return result
        self._check(gpu, counts)
        result = {}
        for parent, _ in self._parents(gpu):
            busy = any(d.parent == parent for d in on_gpu)
            result[parent] = {
                t.id: 0 if t.gpu_instance_profile
                else self._available(gpu, t, counts, busy)
                for t in gpu.model.types}
        return result

    def _check(self, gpu: GPUSpec, counts: dict[str, int]) -> None:
        where = 'simulated host profile %s: GPU %s' % (
            self.profile.name, gpu.name)
        if gpu.model.sharing == POOLED:
            used = sum(gpu.model.type(t).units * n for t, n in counts.items())
            if used > gpu.model.pool_units:
                raise exception.ProfileError(
                    '%s: its devices take %d units of %d' % (
                        where, used, gpu.model.pool_units))
            return
        if len(counts) > 1:
            raise exception.ProfileError(
                '%s: holds devices of types %s, but a time-sliced GPU holds '
                'one type at a time' % (where, ', '.join(sorted(counts))))
        for type_id, count in counts.items():
            most = gpu.model.type(type_id).most(gpu.mixed_size)
            if count > most:
                raise exception.ProfileError(
                    '%s: %d devices of %s, more than its max_instance%s '
                    '%d' % (where, count, type_id,
                            '_mixed' if gpu.mixed_size else '', most))

    @staticmethod
    def _available(gpu: GPUSpec, vgpu_type: TypeSpec,
                   counts: dict[str, int], busy: bool) -> int:
        spec = gpu.model
        if spec.sharing == POOLED:
            used = sum(spec.type(t).units * n for t, n in counts.items())
            return (spec.pool_units - used) // vgpu_type.units
        if any(t != vgpu_type.id for t in counts):
            return 0
        left = vgpu_type.most(gpu.mixed_size) - counts.get(vgpu_type.id, 0)
        if spec.sharing == SRIOV:
            return 1 if (left > 0 and not busy) else 0
        return left


def lay_out(profile: Profile, root: str,
            devices: tuple[model.MediatedDevice, ...] | None = None) -> None:
    """Write ``profile`` below ``root`` as a kernel-style sysfs tree."""
    kernel = KernelModel(profile, devices)
    available = kernel.available()
    tree = layout.SysfsTree(root)
    store = simulated_mig.MigStore(root)
    for gpu_address, state in kernel.mig_states.items():
        store.save(gpu_address, state)
    parent_dirs = {}
    for gpu in profile.gpus:
        spec = gpu.model

        def types_for(parent: str) -> list[model.VGPUType]:
            return [model.VGPUType(
                id=t.id, name=t.name,
                available_instances=available[parent][t.id],
                device_api=t.device_api, description=t.description)
                for t in spec.types]

        if gpu.virtual_path:
            dev = tree.add_virtual_device(gpu.virtual_path)
            tree.make_mdev_parent(dev, os.path.basename(gpu.virtual_path),
                                  types_for(gpu.name))
            parent_dirs[gpu.name] = dev
            continue
        dev = tree.add_pci_device(gpu.address, vendor_id=spec.vendor_id,
                                  device_id=spec.device_id,
                                  path=gpu.sysfs_path)
        if spec.sharing == SRIOV:
            vfs = gpu.vf_addresses()
            for vf, vf_dir in zip(vfs, tree.add_virtual_functions(
                    gpu.address, vfs)):
                name = address.libvirt_name(vf)
                parent_dirs[name] = vf_dir
                if spec.vfio:
                    held = [d for d in kernel.devices if d.parent == name]
                    tree.make_vfio_vf(vf_dir, _creatable(
                        spec, available[name]), vfio.type_number(
                            held[0].type_id) if held else 0)
                else:
                    tree.make_mdev_parent(vf_dir, vf, types_for(name))
        else:
            tree.make_mdev_parent(dev, gpu.address, types_for(gpu.name))
            parent_dirs[gpu.name] = dev
    for dev in kernel.devices:
        if dev.kind == model.MDEV:
            tree.add_mdev(parent_dirs[dev.parent], dev.uuid, dev.type_id)


def _creatable(spec: ModelSpec, available: dict[str, int]
               ) -> list[tuple[int, str]]:
    """A vendor-VFIO VF's creatable types: those it could take now."""
    return [(vfio.type_number(t.id), t.name) for t in spec.types
            if available.get(t.id)]


_KERNELS: dict[tuple[str, int], 'SimulatedKernel'] = {}
_KERNELS_LOCK = threading.Lock()


#: The simulated kernel's record of the change in progress.
JOURNAL = '.kernel.journal'


class SimulatedKernel:
    """The kernel and vGPU manager of a simulated host.

    Carries out a write to ``create``, ``remove`` or a VF's
    ``current_vgpu_type`` as they would (a device appears,
    ``available_instances`` moves, ENOSPC when there is no room, EBUSY
    when a guest uses the device). It runs wherever the write is made: in
    the privsep daemon for a host owned by root, in place otherwise
    (:mod:`vgpu_nova_ext.host.writes`).
    """

    def __init__(self, profile: Profile, root: str) -> None:
        self.profile = profile
        self.root = root
        self.reader = sysfs.SysfsReader(root)
        self.tree = layout.SysfsTree(root)
        self.model = KernelModel(profile, (), mig_states={})
        self.mig = simulated_mig.MigStore(root)
        self._parents: dict[str, str] | None = None

    @classmethod
    def at(cls, root: str) -> 'SimulatedKernel':
        """The kernel of the simulated host laid out at ``root``."""
        path = os.path.join(root, writes.SIMULATED_MARK)
        key = (root, os.stat(path).st_mtime_ns)
        with _KERNELS_LOCK:
            kernel = _KERNELS.get(key)
            if kernel is None:
                with open(path) as f:
                    mark = json.load(f)
                kernel = _KERNELS[key] = cls(
                    parse_profile(mark['profile'], mark['source']), root)
            return kernel

    @staticmethod
    def mark(profile: Profile, root: str) -> None:
        layout.SysfsTree._write(
            os.path.join(root, writes.SIMULATED_MARK), json.dumps(
                {'source': profile.name, 'profile': profile.text}), 0o644)

    @staticmethod
    @contextlib.contextmanager
    def lock(root: str):
        with open(os.path.join(root, '.kernel.lock'), 'a') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def write(self, path: str, value: str) -> None:
        """A write to the attribute at ``path`` (resolved).

        Crash-atomic, as the kernel's are (a write to ``create`` completes
        even if the writer dies): once checked, the change is recorded in a
        journal before any file moves, and whatever a killed writer left
        half done is finished by the next write, or when the host is
        opened again.
        """
        name = os.path.basename(path)
        with self.lock(self.root):
            self.recover()
            if name == 'create':
                self._create(os.path.dirname(path), value.strip())
            elif name == 'remove':
                self._remove(os.path.dirname(path))
            elif name == vfio.CURRENT:
                self._set_vf_type(os.path.dirname(os.path.dirname(path)),
                                  value.strip())
            else:
                raise _fail(errno.EACCES)

    # -- nvidia-smi and sriov-manage (MIG) ----------------------------------
    def mig_command(self, command: str, gpu_address: str,
                    argument: str = '') -> None:
        """What nvidia-smi and sriov-manage do to a GPU's MIG state.

        ``mig_mode`` (``1``/``0``), ``sriov_manage`` (``-e``: wipes the GPU
        instances) or ``create_gpu_instance`` (``<profile>:<start slice>``,
        as NVML creates one at a placement; a profile alone: at its first
        free placement, as nvidia-smi does). Each is one atomic replace of
        the GPU's state file.
        """
        with self.lock(self.root):
            self.recover()
            gpu = next((g for g in self.profile.gpus
                        if g.address == gpu_address), None)
            if gpu is None or not gpu.model.vfio:
                raise _fail(errno.ENODEV)
            state = self.mig.load(gpu_address)
            held = any(self.reader.vfio_current(self._parent_dir(name))
                       for name, _ in self.model._parents(gpu))
            if command == 'mig_mode':
                if not gpu.model.mig_profiles:
                    raise _fail(errno.EOPNOTSUPP)
                simulated_mig.set_mode(state, argument == '1', held)
            elif command == 'sriov_manage':
                simulated_mig.wipe(state, held)
            elif command == 'create_gpu_instance':
                profile, _, start = argument.partition(':')
                simulated_mig.create_instance(
                    state, gpu.model.mig_profile_map(), profile,
                    int(start) if start else None)
            else:
                raise _fail(errno.EINVAL)
            self.mig.save(gpu_address, state)
            self._recompute(self._parent_dir(
                self.model._parents(gpu)[0][0]))

    # -- the journal -------------------------------------------------------
    def _journal_path(self) -> str:
        return os.path.join(self.root, JOURNAL)

    def _begin(self, op: str, **where: str) -> None:
        """Record a checked change; paths relative to the root."""
        layout.SysfsTree._write(self._journal_path(), json.dumps(dict(
            op=op, **{k: os.path.relpath(v, self.root) if k.endswith('_dir')
                      else v for k, v in where.items()})), 0o644)

    def _end(self) -> None:
        os.unlink(self._journal_path())

    def recover(self) -> None:
        """Finish the change a killed writer left half done, if any.

        Call with :meth:`lock` held.
        """
        try:
            with open(self._journal_path()) as f:
                record = json.load(f)
        except FileNotFoundError:
            return
        for key in list(record):
            if key.endswith('_dir'):
                record[key] = os.path.join(self.root, record[key])
        if record['op'] == 'create':
            self._do_create(record['type_dir'], record['device'])
        elif record['op'] == 'remove':
            self._do_remove(record['mdev_dir'], record['type_dir'])
        else:
            self._do_set_vf_type(record['vf_dir'], int(record['number']))
        self._end()

    def _device_dir(self, device_id: str) -> str:
        return os.path.join(self.reader.sys, 'bus', 'mdev', 'devices',
                            device_id)

    def _set_vf_type(self, vf_dir: str, value: str) -> None:
        """NVIDIA's driver on a write to ``current_vgpu_type``."""
        try:
            number = int(value)
        except ValueError:
            raise _fail(errno.EINVAL)
        nvidia = os.path.join(vf_dir, vfio.NVIDIA_DIR)
        current = self.reader.vfio_current(vf_dir)
        if number == 0:
            if os.path.exists(os.path.join(nvidia, IN_USE_MARK)):
                raise _fail(errno.EBUSY)
        elif current:
            raise _fail(errno.EBUSY)
        else:
            creatable = [n for n, _ in vfio.parse_creatable(
                self.reader._read(os.path.join(nvidia, vfio.CREATABLE)))]
            if number not in creatable:
                known = any(vfio.type_number(t.id) == number
                            for g in self.profile.gpus for t in g.model.types)
                raise _fail(errno.ENOSPC if known else errno.EINVAL)
        self._begin('vf_type', vf_dir=vf_dir, number=str(number))
        self._do_set_vf_type(vf_dir, number)
        self._end()

    def _do_set_vf_type(self, vf_dir: str, number: int) -> None:
        self._place_on_instance(vf_dir, number)
        layout.SysfsTree._write(
            os.path.join(vf_dir, vfio.NVIDIA_DIR, vfio.CURRENT),
            '%d\n' % number, 0o644)
        self._recompute(vf_dir)

    def _place_on_instance(self, vf_dir: str, number: int) -> None:
        """A MIG-backed vGPU lands on a GPU instance with room.

        The driver chooses; the VF shows which. Idempotent, for the journal.
        """
        vf = self.reader._parent_identity(vf_dir)[0]
        gpu = next(g for g in self.profile.gpus
                   if vf in [n for n, _ in self.model._parents(g)])
        state = self.mig.load(gpu.address)
        if not state['mig']:
            return
        vgpu_type = gpu.model.type(vfio.type_id(number)) if number else None
        gi = None
        if vgpu_type is not None and vgpu_type.gpu_instance_profile:
            gi_id = state['vgpus'].get(vf)
            gi = next((g for g in state['instances'] if g['id'] == gi_id),
                      None) or simulated_mig.instance_with_room(
                          state, vgpu_type.gpu_instance_profile,
                          vgpu_type.max_per_gi)
        if gi is None:
            state['vgpus'].pop(vf, None)
        else:
            state['vgpus'][vf] = gi['id']
        self.mig.save(gpu.address, state)
        nvidia = os.path.join(vf_dir, vfio.NVIDIA_DIR)
        layout.SysfsTree._write(os.path.join(nvidia, 'gpu_instance_id'),
                                '%d\n' % (gi['id'] if gi else 0), 0o644)
        layout.SysfsTree._write(os.path.join(nvidia, 'placement_id'),
                                '%d\n' % (gi['start'] if gi else 0), 0o644)

    def _create(self, type_dir: str, device_id: str) -> None:
        try:
            device_id = str(uuidlib.UUID(device_id))
        except ValueError:
            raise _fail(errno.EINVAL)
        if os.path.lexists(self._device_dir(device_id)):
            raise _fail(errno.EEXIST)
        if self.reader._read_int(os.path.join(
                type_dir, 'available_instances')) < 1:
            raise _fail(errno.ENOSPC)
        self._begin('create', type_dir=type_dir, device=device_id)
        self._do_create(type_dir, device_id)
        self._end()

    def _do_create(self, type_dir: str, device_id: str) -> None:
        """Make the device; also over what a killed create left."""
        parent_dir = os.path.dirname(os.path.dirname(type_dir))
        self.tree.add_mdev(parent_dir, device_id, os.path.basename(type_dir))
        self._recompute(parent_dir)

    def _remove(self, mdev_dir: str) -> None:
        if os.path.exists(os.path.join(mdev_dir, IN_USE_MARK)):
            raise _fail(errno.EBUSY)
        type_dir = os.path.realpath(os.path.join(mdev_dir, 'mdev_type'))
        self._begin('remove', mdev_dir=mdev_dir, type_dir=type_dir)
        self._do_remove(mdev_dir, type_dir)
        self._end()

    def _do_remove(self, mdev_dir: str, type_dir: str) -> None:
        """Take the device away; also what a killed remove left of it."""
        device_id = os.path.basename(mdev_dir)
        for link in (self._device_dir(device_id),
                     os.path.join(type_dir, 'devices', device_id)):
            if os.path.lexists(link):
                os.unlink(link)
        shutil.rmtree(mdev_dir, ignore_errors=True)
        self._recompute(os.path.dirname(mdev_dir))

    def _parent_dir(self, name: str) -> str:
        if self._parents is None:
            # A simulated host's parent devices never change.
            bus = os.path.join(self.reader.sys, 'class', 'mdev_bus')
            dirs = [self.reader._resolve(os.path.join(bus, entry))
                    for entry in self.reader._listdir(bus)]
            self._parents = {self.reader._parent_identity(d)[0]: d
                             for d in dirs + self.reader._vfio_vfs()}
        try:
            return self._parents[name]
        except KeyError:
            raise _fail(errno.ENODEV)

    def _recompute(self, parent_dir: str) -> None:
        """Rewrite available_instances on the GPU of ``parent_dir``."""
        parent = self.reader._parent_identity(parent_dir)[0]
        gpu = next(g for g in self.profile.gpus
                   if parent in [n for n, _ in self.model._parents(g)])
        dirs = {name: self._parent_dir(name)
                for name, _ in self.model._parents(gpu)}
        if gpu.model.vfio:
            self.model.mig_states[gpu.address] = self.mig.load(gpu.address)
        on_gpu = []
        if gpu.model.vfio:
            for name, pdir in dirs.items():
                current = self.reader.vfio_current(pdir)
                if current:
                    on_gpu.append(model.MediatedDevice(
                        name, name, vfio.type_id(current), model.VF))
            for name, types in self.model.gpu_available(gpu,
                                                        on_gpu).items():
                layout.SysfsTree._write(
                    os.path.join(dirs[name], vfio.NVIDIA_DIR,
                                 vfio.CREATABLE),
                    vfio.format_creatable(_creatable(gpu.model, types)))
            return
        for name, pdir in dirs.items():
            types_dir = os.path.join(pdir, 'mdev_supported_types')
            for type_id in os.listdir(types_dir):
                for entry in os.listdir(os.path.join(types_dir, type_id,
                                                     'devices')):
                    on_gpu.append(model.MediatedDevice(entry, name, type_id))
        for name, types in self.model.gpu_available(gpu, on_gpu).items():
            for type_id, count in types.items():
                self.tree.set_available_instances(dirs[name], type_id, count)


def _fail(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class SimulatedBackend(sysfs.SysfsBackend):
    """Host backend on a simulated host described by a profile.

    The host is a sysfs tree that the sysfs backend reads and writes
    unchanged; its :class:`SimulatedKernel` carries the writes out. Give
    ``root`` to share one simulated host between processes. A host owned
    by another user (root) is written through the privsep daemon, as a
    real host is.
    """

    def __init__(self, profile: 'str | Profile' = 'v100x8',
                 root: str | None = None, **kwargs) -> None:
        self.profile = (profile if isinstance(profile, Profile)
                        else load_profile(profile))
        self._own_root = root is None
        root = root or tempfile.mkdtemp(prefix='vgpu-nova-ext-sim-')
        try:
            if not os.path.isdir(os.path.join(root, 'sys')):
                os.makedirs(root, exist_ok=True)
                with SimulatedKernel.lock(root):
                    if not os.path.isdir(os.path.join(root, 'sys')):
                        lay_out(self.profile, root)
                        SimulatedKernel.mark(self.profile, root)
        except BaseException:
            if self._own_root:
                shutil.rmtree(root, ignore_errors=True)
            raise
        kwargs.setdefault('privileged', os.stat(root).st_uid != os.geteuid())
        kwargs.setdefault('facts', SimulatedNvml(self.profile, root))
        if not kwargs['privileged'] and os.path.exists(
                os.path.join(root, JOURNAL)):
            # A writer was killed mid-change: finish it, as the kernel
            # would have (a root-owned host: its next write does).
            with SimulatedKernel.lock(root):
                SimulatedKernel.at(root).recover()
        super().__init__(sysfs_root=root, **kwargs)

    @property
    def root(self) -> str:
        return self.reader.root

    def describe(self) -> str:
        return 'simulated host %r (%s)' % (
            self.profile.name, self.profile.description)

    def close(self) -> None:
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)


class SimulatedNvml(nvml.FactsSource):
    """The NVML of a simulated host.

    Each vendor-VFIO GPU's mode, and each type's most per VM where the
    profile gives it. Names are left to sysfs and the ledger, so that a
    simulated GPU shows what a host without nvidia-ml-py shows.
    """

    def __init__(self, profile: Profile, root: str) -> None:
        self._gpus = {g.address: g for g in profile.gpus if g.model.vfio}
        self._store = simulated_mig.MigStore(root)

    def describe(self) -> str:
        return 'simulated NVML'

    def facts(self, gpu: model.PhysicalGPU) -> nvml.GpuFacts | None:
        spec = self._gpus.get(gpu.address)
        if spec is None:
            return None
        return nvml.GpuFacts(
            mixed_size=spec.mixed_size, max_per_vm=tuple(
                (t.id, t.max_per_vm) for t in spec.model.types
                if t.max_per_vm is not None),
            mig=(self._store.state(gpu.address)
                 if spec.model.mig_profiles else None),
            gpu_instance_profiles=spec.model.mig_profiles)


#: A file in an mdev's directory that the simulated kernel takes as "a
#: guest uses this device": removing it fails with EBUSY, as it would.
IN_USE_MARK = '.in_use'
