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
"""A device's vGPU plugin parameters as its guest's flavor asks them.

Written before each guest start (:mod:`vgpu_nova_ext.nova.hooks`), kept
in mdevctl's definition where one is, and cleared from a device kept free
(``free_device_policy = keep``) when its guest lets it go.
"""

from oslo_log import log as logging

from vgpu_nova_ext import exception

LOG = logging.getLogger(__name__)


def clear(backend, mdevctl, entry) -> None:
    """A kept device loses its guest's parameters.

    Best effort: the next guest's start writes exactly its flavor's in
    any case.
    """
    try:
        if backend.read_vgpu_params(entry.kind, entry.device_id):
            backend.set_vgpu_params(entry.kind, entry.device_id, ())
            mdevctl.write(entry)
    except (exception.DeviceError, NotImplementedError, OSError) as exc:
        LOG.warning('vGPU parameters of kept device %s not cleared (the '
                    'next guest writes its own): %s', entry.device_id, exc)
