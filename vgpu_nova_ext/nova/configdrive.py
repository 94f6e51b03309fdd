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
"""The guest's licensing files on its config drive."""

from nova.virt import configdrive
from oslo_log import log as logging

from vgpu_nova_ext import conf as conf_pkg
from vgpu_nova_ext.licensing import render as licensing_render
from vgpu_nova_ext.licensing import settings as licensing
from vgpu_nova_ext.nova import extension

LOG = logging.getLogger(__name__)
CONF = conf_pkg.CONF


class Hidden(bytes):
    """File content that shows as its length when logged.

    Nova logs InjectionInfo with its files; the token must not follow.
    """

    def __repr__(self) -> str:
        return '<%d bytes>' % len(self)

    __str__ = __repr__


def licensing_files(ext: extension.Extension,
                    instance) -> list[tuple[str, bytes]]:
    """The config drive files that license ``instance``'s vGPUs."""
    types = sorted({e.type_id for e in
                    ext.ledger.of_consumer(instance.uuid)})
    if not types:
        return []
    settings = licensing.load(CONF, ext.config)
    return [(path, Hidden(data)) for path, data in
            licensing_render.config_drive_files(
                settings, types, instance.os_type,
                metadata=dict(instance.metadata or {}),
                instance=instance.uuid)]


def with_licensing(ext: extension.Extension, instance, injection_info):
    """Nova's injection info, the licensing files added where needed."""
    files = (licensing_files(ext, instance)
             if configdrive.required_by(instance) else [])
    if not files:
        return injection_info
    LOG.info('adding the vGPU licensing files %s to the config drive',
             ', '.join(p for p, _ in files), instance=instance)
    return injection_info._replace(
        files=list(injection_info.files or []) + files)
