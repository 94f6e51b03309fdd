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
"""What one guest receives: the vendor plugin's files and commands, as
config drive files and as a ``#cloud-config`` document.

What files a guest needs is the licensing vendor plugin's (see
:mod:`vgpu_nova_ext.vendors.nvidia_licensing`).
"""

import base64
import dataclasses

from oslo_log import log as logging
import yaml

from vgpu_nova_ext import exception
from vgpu_nova_ext.licensing import settings as licensing_settings
from vgpu_nova_ext.vendors import base as vendors_base
from vgpu_nova_ext.vendors import types as vendor_types

LOG = logging.getLogger(__name__)


def guest_licensing(settings: vendor_types.LicensingSettings,
                    type_id: str | None,
                    os_type: str | None = vendor_types.LINUX,
                    vendors=None, metadata: dict | None = None,
                    instance: str | None = None
                    ) -> vendor_types.GuestLicensing:
    """What a guest holding ``type_id`` needs, from the vendor plugin.

    :param metadata: the instance's metadata, where a Linux guest may ask
        for a file of the vendor's cluster operator too (NVIDIA's GPU
        Operator); a wrong request is logged (naming ``instance``) and the
        guest gets the rest.
    """
    problems = licensing_settings.validate(settings)
    if problems:
        raise exception.ConfigError('; '.join(problems))
    vendor = (vendors or vendors_base.loaded()).by_name(settings.vendor)
    windows = (os_type or '').lower() == vendor_types.WINDOWS
    found = vendor.guest_licensing(
        settings, type_id,
        vendor_types.WINDOWS if windows else vendor_types.LINUX)
    if windows or not metadata:
        return found
    try:
        extra = vendor.operator_licensing(found, metadata)
    except vendor_types.GuestRequestError as exc:
        LOG.warning('instance %s: %s; it receives its licensing files '
                    'without it', instance or '(unknown)', exc)
        return found
    if extra is None:
        return found
    return dataclasses.replace(found, files=found.files + (extra,))


def cloud_config(settings: vendor_types.LicensingSettings,
                 type_id: str | None, vendors=None,
                 metadata: dict | None = None,
                 instance: str | None = None) -> str:
    """A ``#cloud-config`` for a Linux guest.

    It writes the guest's files and runs the vendor's commands (which
    restart its licensing daemon).
    """
    found = guest_licensing(settings, type_id, vendor_types.LINUX, vendors,
                            metadata, instance)
    document = {
        'write_files': [{
            'path': f.path,
            'encoding': 'b64',
            'content': base64.b64encode(f.data()).decode(),
            'owner': 'root:root',
            'permissions': '0%o' % f.mode,
        } for f in found.files],
    }
    if found.commands:
        document['runcmd'] = [list(c) for c in found.commands]
    return '#cloud-config\n' + yaml.safe_dump(document, sort_keys=False)


def config_drive_files(settings: vendor_types.LicensingSettings,
                       type_ids: list[str], os_type: str | None,
                       vendors=None, metadata: dict | None = None,
                       instance: str | None = None
                       ) -> list[tuple[str, bytes]]:
    """The (path, content) pairs for Nova's config drive builder.

    Empty unless licensing is enabled and the instance holds a vGPU. One
    type per instance in practice; with several, the first one's is used.
    """
    if not settings.enabled or not type_ids:
        return []
    found = guest_licensing(settings, sorted(type_ids)[0], os_type, vendors,
                            metadata, instance)
    return [(f.path, f.data()) for f in found.files]
