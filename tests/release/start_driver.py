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
"""Start the driver as nova-compute does, in a virtualenv of the release.

Run by tests/release/test_release.py with the Python of a clean virtualenv
that holds only the built wheel, one release of Nova, libvirt-python and
what they need under that release's upper-constraints; so this file imports
nothing from the checkout (it is run by path, not as a module of tests/).

``python start_driver.py <nova.conf> <result.json>``: imports
``nova.cmd.compute`` first (the concurrency mode is the release's own, or
``OS_NOVA_DISABLE_EVENTLET_PATCHING``'s, exactly as nova-compute's), parses
nova.conf as nova-compute does, loads ``[DEFAULT] compute_driver`` through
Nova's loader, runs ``init_host``, one periodic task's
``get_available_resource`` and ``update_provider_tree`` for each node, and
writes what it saw as JSON. Nova's conductor is replaced by a SQLite
database in nova.conf (nova-manage db sync), the only piece of a cloud this
needs; libvirt is libvirt's own in-process test driver (``test:///default``).
"""

import json
import os
import sys

import nova.cmd.compute  # noqa: F401  (first: the release's monkey patching)

from nova.compute import provider_tree
import nova.conf
from nova import config
from nova import objects
from nova import version as nova_version
from nova.virt import driver as virt_driver
from nova.virt import fake


def _mode() -> str:
    if 'eventlet' in sys.modules:
        from eventlet import patcher
        if patcher.is_monkey_patched('thread'):
            return 'eventlet'
    return 'threading'


def main(conf_file: str, result_file: str) -> None:
    objects.register_all()
    config.parse_args(['nova-compute', '--config-file', conf_file])
    conf = nova.conf.CONF
    # What ComputeManager does with compute_driver (its virtapi is the
    # manager's; Nova's fake one answers the same calls without RPC).
    driver = virt_driver.load_compute_driver(fake.FakeVirtAPI(),
                                             conf.compute_driver)
    driver.init_host(conf.host)
    nodes = driver.get_nodenames_by_uuid()
    providers = {}
    for node_uuid, node in nodes.items():
        driver.get_available_resource(node)
        tree = provider_tree.ProviderTree()
        tree.new_root(node, node_uuid)
        driver.update_provider_tree(tree, node)
        for uuid in tree.get_provider_uuids():
            data = tree.data(uuid)
            providers[data.name] = {
                'parent': data.parent_uuid,
                'inventory': data.inventory,
                'traits': sorted(data.traits),
            }
    with open(result_file, 'w') as f:
        json.dump({
            'driver': '%s.%s' % (type(driver).__module__,
                                 type(driver).__name__),
            'nova': nova_version.version_string(),
            'mode': _mode(),
            'nodes': sorted(nodes.values()),
            'providers': providers,
        }, f)
    driver.cleanup_host(conf.host)


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2])
    sys.stdout.flush()
    sys.stderr.flush()
    # libvirt's event loop thread is not a daemon: nova-compute ends it by
    # exiting the process too.
    os._exit(0)
