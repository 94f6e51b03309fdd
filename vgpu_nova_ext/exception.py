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
"""Errors of vgpu-nova-ext.

Every error carries a stable ``code`` (as Placement's errors do) so that
scripts and tests can tell them apart without parsing the message, and a
message that names the thing, the value and the fix.
"""


class VGPUNovaExtError(Exception):
    """Base of every error this project raises on purpose."""

    code = 'vgpu_nova_ext.error'

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(VGPUNovaExtError):
    """A configuration file or option is unreadable or invalid."""

    code = 'vgpu_nova_ext.config'


class FlavorSpecError(VGPUNovaExtError):
    """A flavor's ``vgpu_nova_ext:`` extra spec is unknown or invalid."""

    code = 'vgpu_nova_ext.flavor_spec'


class ProfileError(VGPUNovaExtError):
    """A simulated-host profile is missing or malformed."""

    code = 'vgpu_nova_ext.profile'


class HostReadError(VGPUNovaExtError):
    """The host's device tree could not be read or makes no sense."""

    code = 'vgpu_nova_ext.host_read'


class PluginNotFound(VGPUNovaExtError):
    """No plugin is installed under the requested name."""

    code = 'vgpu_nova_ext.plugin_not_found'


class DeviceError(VGPUNovaExtError):
    """A device could not be created or removed."""

    code = 'vgpu_nova_ext.device'


class DeviceCapacityError(DeviceError):
    """No room for another device of that type (ENOSPC)."""

    code = 'vgpu_nova_ext.device.capacity'


class DeviceBusyError(DeviceError):
    """The device is in use, by a guest most likely (EBUSY)."""

    code = 'vgpu_nova_ext.device.busy'


class DeviceGoneError(DeviceError):
    """The parent device or the device is not there (ENODEV, ENOENT)."""

    code = 'vgpu_nova_ext.device.gone'


class DeviceExistsError(DeviceError):
    """A device with that UUID exists already (EEXIST)."""

    code = 'vgpu_nova_ext.device.exists'


class DeviceTimeoutError(DeviceError):
    """The kernel accepted the request but the device did not follow."""

    code = 'vgpu_nova_ext.device.timeout'


class ClaimError(VGPUNovaExtError):
    """A claim cannot be met; nothing was changed on the host."""

    code = 'vgpu_nova_ext.claim'


class CombinationRefused(ClaimError):
    """The vGPUs asked for one guest break the vendor's rules.

    No host can meet it: the build is aborted, not rescheduled.
    """

    code = 'vgpu_nova_ext.claim.combination'


class LedgerError(VGPUNovaExtError):
    """The ledger file or its state directory cannot be used."""

    code = 'vgpu_nova_ext.ledger'
