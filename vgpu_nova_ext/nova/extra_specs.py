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
"""This project's flavor extra specs: the ``vgpu_nova_ext`` namespace.

A namespace of this project's own, named after it as the instance metadata
key ``vgpu_nova_ext:gpu_operator`` is: Nova owns ``hw:``, ``hw_video:`` and
the others, and a generic ``vgpu:`` could be taken by Nova one day.

- ``vgpu_nova_ext:display``: ``off`` (the default), ``on`` (libvirt's
  ``display='on'`` on the vGPU's ``<hostdev>``: the vGPU drives the
  guest's console, seen through Nova's VNC or SPICE console), or
  ``ramfb`` (on, and ``ramfb='on'``: a boot console before the guest's
  NVIDIA driver loads). An mdev of a graphics type only: a VF of NVIDIA's
  vendor-specific VFIO is a PCI ``<hostdev>``, which has no display, and a
  C-series type is a compute profile.

- ``vgpu_nova_ext:vgpu_params:<name>``: a vGPU plugin parameter written
  to each of the guest's vGPUs (``nvidia/vgpu_params``) before it starts,
  for example ``vgpu_nova_ext:vgpu_params:enable_uvm=1``. The names and
  values are the vendor plugins' (``VendorPlugin.vgpu_params``); whether
  one applies to the type is the plugin's rule, checked on the host.

nova-api validates them where this package is installed beside it (Nova's
``nova.api.extra_spec_validators`` entry point, :func:`register`); the
driver reads them again in any case (:func:`read`).
"""

from collections.abc import Mapping
import dataclasses
import enum

from vgpu_nova_ext import exception
from vgpu_nova_ext.host import model
from vgpu_nova_ext.vendors import base as vendors_base

NAMESPACE = 'vgpu_nova_ext'
DISPLAY = NAMESPACE + ':display'
VGPU_PARAMS = NAMESPACE + ':vgpu_params:'


class Display(enum.Enum):
    OFF = 'off'
    ON = 'on'
    RAMFB = 'ramfb'


#: The vendor's series of a type that drives no display.
NO_DISPLAY_SERIES = frozenset({'C'})
_KNOWN = (DISPLAY,)


@dataclasses.dataclass(frozen=True)
class FlavorVgpu:
    """What a flavor asks of its vGPUs beyond Placement's resources."""

    display: Display = Display.OFF
    vgpu_params: tuple[tuple[str, str], ...] = ()
    """(name, value) of each ``vgpu_nova_ext:vgpu_params:<name>``."""


def read(extra_specs: Mapping[str, str] | None) -> FlavorVgpu:
    """The flavor's ``vgpu_nova_ext:`` extra specs.

    :raises FlavorSpecError: naming the key, the value and what is allowed.
    """
    specs = dict(extra_specs or {})
    allowed = vendors_base.loaded().vgpu_param_values()
    params = []
    for key in sorted(specs):
        if key.startswith(VGPU_PARAMS):
            name = key[len(VGPU_PARAMS):]
            if name not in allowed:
                raise exception.FlavorSpecError(
                    'flavor extra spec %s: %r is not a vGPU plugin '
                    'parameter the installed vendors allow (%s)' % (
                        key, name, ', '.join(allowed) or 'none'))
            value = str(specs[key]).strip()
            if value not in allowed[name]:
                raise exception.FlavorSpecError(
                    'flavor extra spec %s = %r: give one of %s' % (
                        key, str(specs[key])[:80],
                        ', '.join(allowed[name])))
            params.append((name, value))
        elif key.startswith(NAMESPACE + ':') and key not in _KNOWN:
            raise exception.FlavorSpecError(
                'flavor extra spec %s is not one of this project\'s (%s, '
                '%s<name>); correct its name (openstack flavor unset '
                '--property %s)' % (key, ', '.join(_KNOWN), VGPU_PARAMS,
                                    key))
    value = specs.get(DISPLAY, Display.OFF.value)
    try:
        display = Display(str(value).strip().lower())
    except ValueError:
        raise exception.FlavorSpecError(
            'flavor extra spec %s = %r: give one of %s' % (
                DISPLAY, str(value)[:80],
                ', '.join(d.value for d in Display)))
    return FlavorVgpu(display=display, vgpu_params=tuple(params))


def display_problem(kind: str, type_id: str | None,
                    series: str | None) -> str | None:
    """Why a device cannot drive a display, or None."""
    if kind == model.VF:
        return ('%s asks for a display, but this vGPU is a VF of NVIDIA\'s '
                'vendor-specific VFIO (a PCI device, which libvirt gives no '
                'display); use a flavor without it' % DISPLAY)
    if series in NO_DISPLAY_SERIES:
        return ('%s asks for a display, but type %s is a %s-series '
                '(compute) vGPU, which drives none; pin a graphics type '
                '(Q or B series) with its trait, or drop the extra spec'
                % (DISPLAY, type_id, series))
    return None


def register():
    """Nova's extra spec validators of this namespace (nova-api)."""
    from nova.api.validation.extra_specs import base
    return [base.ExtraSpecValidator(
        name=DISPLAY,
        description=(
            'The vGPU drives the guest\'s console: "on", "ramfb" (with a '
            'boot console before the guest driver loads) or "off" (the '
            'default). mdev vGPUs of a graphics type only '
            '(vgpu-nova-ext).'),
        value={'type': str, 'enum': [d.value for d in Display]})] + [
        base.ExtraSpecValidator(
            name=VGPU_PARAMS + name,
            description=(
                'The vGPU plugin parameter %s, written to each of the '
                'guest\'s vGPUs before it starts; whether it applies to the '
                'type is checked on the host (vgpu-nova-ext).' % name),
            value={'type': str, 'enum': list(values)})
        for name, values in
        vendors_base.loaded().vgpu_param_values().items()]
