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
"""A compute driver outside Nova's service harness, on Nova's fake libvirt.

For what needs a driver and a host but no API, scheduler or database: the
periodic-task benchmark, and the check of a host carried over from another
Nova release. The driver is Nova's class (or this project's), made as
nova-compute makes it; its connection is the fake libvirt connection
given.
"""

import contextlib

from nova.compute import provider_tree
import nova.conf
from nova import objects
from nova.tests import fixtures as nova_fixtures
from nova.virt import fake as fake_virt

CONF = nova.conf.CONF


def configure(**groups: dict) -> None:
    """nova.conf: Nova's defaults, and ``{group: {option: value}}``.

    ``DEFAULT`` names the options without a group.
    """
    objects.register_all()
    CONF([], project='nova')
    for group, options in groups.items():
        for name, value in options.items():
            CONF.set_override(name, value,
                              group=None if group == 'DEFAULT' else group)


@contextlib.contextmanager
def fake_libvirt():
    """Nova's own fixture: its fake libvirt in place of libvirt-python."""
    with nova_fixtures.LibvirtFixture():
        yield


def driver(cls, connection):
    """A ``cls`` driver on ``connection``, as Nova's harness hands it."""
    made = cls(fake_virt.FakeVirtAPI(), False)
    made._host.get_connection = lambda: connection
    return made


def tree(root_name: str, root_uuid: str) -> provider_tree.ProviderTree:
    """A provider tree holding the compute node's provider."""
    out = provider_tree.ProviderTree()
    out.new_root(root_name, root_uuid)
    return out
