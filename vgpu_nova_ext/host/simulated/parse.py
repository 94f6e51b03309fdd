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
"""Reading a simulated host profile (YAML) into :mod:`.specs` records.

Every error names the file, the key and what is expected; a profile may
hold no YAML aliases and nests no deeper than the interpreter allows.
"""

import dataclasses
import importlib.resources
import os
import re
import uuid as uuidlib

import yaml

from vgpu_nova_ext import exception
from vgpu_nova_ext import files
from vgpu_nova_ext.host import address
from vgpu_nova_ext.host import mig
from vgpu_nova_ext.host import model
from vgpu_nova_ext.host.simulated import capacity
from vgpu_nova_ext.host.simulated import specs
from vgpu_nova_ext.host import vfio


# Row form of a type: id, name, framebuffer MiB, display heads, frame rate
# limit, max resolution, max instances per GPU (optional), and in NVIDIA's
# mixed-size mode (optional; the same when not given).
_ROW_FIELDS = ('id', 'name', 'framebuffer_mb', 'num_heads', 'frl_config',
               'max_resolution', 'max_instance', 'max_instance_mixed')
_PROFILE_NAME_RE = re.compile(r'^[a-z0-9][a-z0-9-]*$')


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


def builtin_profiles() -> list[str]:
    files = importlib.resources.files(_PROFILE_PACKAGE)
    return sorted(f.name[:-5] for f in files.iterdir()
                  if f.name.endswith('.yaml'))


def load_profile(name_or_path: str) -> specs.Profile:
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
        text = files.read_text(name_or_path, 'simulated host profile')
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


def parse_profile(text: str, source: str) -> specs.Profile:
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
        gpus.append(specs.GPUSpec(
            model=models[model_name], address=pci, virtual_path=virtual,
            sysfs_path=_relative_path(r, item, 'sysfs_path', where),
            mixed_size=mixed,
            gpu_instances=tuple(sorted(layout_.items()))))
    if not gpus:
        raise r.fail('gpus', 'a host needs at least one GPU')
    names = [g.name for g in gpus]
    if len(set(names)) != len(names):
        raise r.fail('gpus', 'the same device is listed twice')
    profile = specs.Profile(
        name=os.path.basename(source).rsplit('.', 1)[0],
        description=r.get(data, 'description', str, 'top level', ''),
        gpus=tuple(gpus),
        mediated_devices=tuple(_parse_mdevs(r, data, gpus)),
        example_config=r.get(data, 'example_config', str, 'top level', None),
        source=r.get(data, 'source', str, 'top level', None), text=text)
    # Lay out once to check the devices against the kernel's rules.
    capacity.KernelModel(profile).available()
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


def _parse_model(r: _Reader, name: str, spec) -> specs.ModelSpec:
    where = 'models.%s' % name
    spec = r.mapping(spec, where)
    sharing = r.get(spec, 'sharing', str, where)
    if sharing not in specs.SHARING_MODES:
        raise r.fail(where + '.sharing', '%r is not one of %s' % (
            sharing, ', '.join(specs.SHARING_MODES)))
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
            if sharing == specs.POOLED:
                max_instance = (r.get(spec, 'pool_units', int, where)
                                // r.get(row, 'units', int, twhere, 1))
            elif framebuffer and type_fb:
                max_instance = framebuffer // type_fb
            else:
                raise r.fail(twhere, 'give max_instance, or framebuffer_mb '
                             'both here and on the model')
        type_id = r.get(row, 'id', str, twhere)
        if not model.TYPE_ID_RE.match(type_id):
            raise r.fail(twhere + '.id', '%r is not a type id as the kernel '
                         'names them (letters, digits, "_.:-", for example '
                         'nvidia-35)' % type_id)
        types.append(specs.TypeSpec(
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
            max_per_gi=_per_gi(r, row, twhere),
            max_instance_mixed=r.get(row, 'max_instance_mixed', int, twhere,
                                     None)))
    if not types:
        raise r.fail(where + '.types', 'a model needs at least one type')
    vfs = r.get(spec, 'sriov_vfs', int, where, 0)
    if (sharing == specs.SRIOV) != (vfs > 0):
        raise r.fail(where + '.sriov_vfs',
                     'set it (> 0) exactly when sharing is sriov')
    use_vfio = r.get(spec, 'vfio', bool, where, False)
    if use_vfio and sharing != specs.SRIOV:
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
    after_reboot = r.get(spec, 'mig_mode_after_reboot', str, where,
                         specs.MIG_MODE_OFF)
    if after_reboot not in specs.MIG_MODE_AFTER_REBOOT or (
            after_reboot == specs.MIG_MODE_KEPT and not profiles):
        raise r.fail(where + '.mig_mode_after_reboot', '%r is not one of %s '
                     '(kept: on a model with mig_profiles)' % (
                         after_reboot, ', '.join(
                             specs.MIG_MODE_AFTER_REBOOT)))
    names = {p.name for p in profiles}
    for t in types:
        if t.gpu_instance_profile and t.gpu_instance_profile not in names:
            raise r.fail(where + '.types', '%s runs on GPU instance profile '
                         '%r, which is not under mig_profiles' % (
                             t.id, t.gpu_instance_profile))
    return specs.ModelSpec(
        name=name, sharing=sharing, types=tuple(types),
        vendor_id=r.get(spec, 'vendor_id', str, where, '0x10de'),
        device_id=r.get(spec, 'device_id', str, where, '0x0000'),
        sriov_vfs=vfs, pool_units=r.get(spec, 'pool_units', int, where, 0),
        vfio=use_vfio, mig_profiles=tuple(profiles),
        mig_mode_after_reboot=after_reboot)


def _per_gi(r: '_Reader', row, where: str) -> int:
    """A MIG-backed type's most per GPU instance (1 unless time-sliced)."""
    most = r.get(row, 'max_per_gi', int, where, 1)
    if most < 1 or (most > 1 and not r.get(row, 'gpu_instance_profile',
                                           str, where, None)):
        raise r.fail(where + '.max_per_gi', '%r: give 1 or more, and more '
                     'than 1 only with gpu_instance_profile' % most)
    return most


def _parse_mdevs(r: _Reader, data: dict, gpus: list[specs.GPUSpec]):
    parents = {}
    for gpu in gpus:
        if gpu.model.sharing == specs.SRIOV:
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
