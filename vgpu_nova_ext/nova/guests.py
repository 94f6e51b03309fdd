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
"""The host's guests and the vGPU devices in their domains."""

from oslo_log import log as logging

from vgpu_nova_ext.devices import guest as guest_mod

LOG = logging.getLogger(__name__)


def domain_devices(host, read_xml: bool = True
                   ) -> tuple[dict[str, list[str]], bool]:
    """The vGPU devices of the host's domains.

    :param host: Nova's libvirt host.
    :param read_xml: False: only the domains' UUIDs (no device lists),
        without reading every domain's XML.
    :returns: {domain uuid: device ids in its XML}, and whether every
        domain could be read.
    """
    found = {}
    every_domain = True
    for guest in host.list_guests(only_running=False):
        if not read_xml:
            found[guest.uuid] = []
            continue
        try:
            found[guest.uuid] = guest_mod.devices_in_domain(
                guest.get_xml_desc())
        except Exception as exc:  # a domain vanishing while listed
            LOG.warning('cannot read the domain %s (%s): its vGPU '
                        'devices are not counted as used this time',
                        guest.uuid, exc)
            every_domain = False
    return found, every_domain
