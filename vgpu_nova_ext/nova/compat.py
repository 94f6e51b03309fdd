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
"""The Nova releases this driver is tested with, and what differs.

The driver overrides private methods of Nova's libvirt driver
(:data:`PRIVATE_METHODS`); they change between releases, so the driver
refuses to start on a release it was not tested with. What differs
between the supported releases is told by :func:`features`, found in
Nova itself (not from its version number), and asked here only.
"""

import dataclasses
import functools
from importlib import metadata

from vgpu_nova_ext import exception

#: The maintained Nova releases, each tested by a nova-functional tox
#: environment with its own upper-constraints: 2025.2 Flamingo (32),
#: 2026.1 Gazpacho (33, SLURP), 2026.2 Hibiscus (34).
SUPPORTED_MAJORS = (32, 33, 34)
SERIES = {32: '2025.2 Flamingo', 33: '2026.1 Gazpacho',
          34: '2026.2 Hibiscus'}
PRIVATE_METHODS = ('_update_provider_tree_for_vgpu', '_allocate_mdevs',
                   '_guest_add_mdevs', '_get_supported_vgpu_types',
                   '_get_all_assigned_mediated_devices',
                   '_detach_mediated_devices', '_get_mdevs_from_guest_config',
                   '_create_configdrive', '_hard_reboot',
                   '_get_mdev_types_from_uuids', '_get_guest_config')


def nova_version() -> str:
    try:
        return metadata.version('nova')
    except metadata.PackageNotFoundError:
        raise exception.VGPUNovaExtError(
            'the nova package is not installed in this environment: install '
            'vgpu-nova-ext into nova-compute\'s own environment')


def check_nova() -> str:
    """The Nova version, or an error naming the supported ones."""
    version = nova_version()
    try:
        major = int(version.split('.')[0])
    except ValueError:
        major = -1
    if major not in SUPPORTED_MAJORS:
        raise exception.VGPUNovaExtError(
            'vgpu-nova-ext %s supports Nova %s, not Nova %s: its driver '
            'overrides private methods of Nova\'s libvirt driver that change '
            'between releases, and it is tested on those releases only. '
            'Install the vgpu-nova-ext release made for this Nova' % (
                _own_version(), ', '.join(
                    '%d.x (%s)' % (m, SERIES[m]) for m in SUPPORTED_MAJORS),
                version))
    from nova.virt.libvirt import driver as libvirt_driver
    missing = [m for m in PRIVATE_METHODS
               if not hasattr(libvirt_driver.LibvirtDriver, m)]
    if missing:
        raise exception.VGPUNovaExtError(
            'Nova %s lacks %s, which vgpu-nova-ext overrides; this Nova is '
            'not supported' % (version, ', '.join(missing)))
    return version


@dataclasses.dataclass(frozen=True)
class NovaFeatures:
    """What the running Nova does that others do not."""

    version: str
    owner_trait: bool
    """Nova marks every provider it makes with ``OWNER_NOVA`` (34+), and
    so do the GPU providers made here."""
    cyborg_mdevs: bool
    """Nova itself creates the mdevs of Cyborg's accelerator requests at
    spawn and hard reboot (34+): devices of the guest that are not this
    project's, left to Nova."""


@functools.lru_cache(maxsize=1)
def features() -> NovaFeatures:
    """The running Nova's features, found in its code."""
    import os_traits

    from nova.scheduler import request_filter
    from nova.virt.libvirt import driver as libvirt_driver
    return NovaFeatures(
        version=nova_version(),
        owner_trait=hasattr(os_traits, 'OWNER_NOVA') and hasattr(
            request_filter, 'MIN_COMPUTE_VERSION_OWNER_TRAIT'),
        cyborg_mdevs=hasattr(libvirt_driver.LibvirtDriver,
                             '_allocate_cyborg_mdevs'))


def _own_version() -> str:
    try:
        return metadata.version('vgpu-nova-ext')
    except metadata.PackageNotFoundError:
        return '(unknown version)'
