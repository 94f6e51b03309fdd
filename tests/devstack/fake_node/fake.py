#!/usr/bin/env python3
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
"""A stacked devstack node, as the gate check sees it through its commands.

Installed under the names openstack, sudo, virsh, isoinfo, hostname,
vgpu-nova-ext, curl and ps; answers from the world in
$FAKE_WORLD/world.json (what is right or broken on this node) and keeps
the server's life in that directory. Any command the check was not
expected to run fails.
"""

import configparser
import hashlib
import hmac
import json
import os
import sys

SERVER = '5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a'
DEVICE = 'b1a2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d'
ROOT = '0a9b8c7d-6e5f-4a3b-9c1d-2e3f4a5b6c7d'
GPU = '7f6e5d4c-3b2a-4f1e-8d9c-0b1a2c3d4e5f'
PROJECT = '3c2b1a0f9e8d4c7b6a5f4e3d2c1b0a9f'
VENDOR_DATA = {'cloud-init': '#cloud-config\nwrite_files:\n- path: '
               '/etc/nvidia/ClientConfigToken/'
               'client_configuration_token.tok\n'}


def _metadata(world: dict, args: list[str]) -> int:
    """nova-api-meta: answers a request signed as Neutron's proxy signs."""
    headers = dict(args[i + 1].split(': ', 1) for i, a in enumerate(args)
                   if a == '-H')
    parser = configparser.RawConfigParser()
    parser.read(os.environ['FAKE_NOVA_CONF'])
    secret = parser.get('neutron', 'metadata_proxy_shared_secret')
    signed = hmac.new(secret.encode(),
                      headers.get('X-Instance-ID', '').encode(),
                      hashlib.sha256).hexdigest()
    if args[-1] != 'http://127.0.0.1:8775/openstack/latest/' \
            'vendor_data2.json' or headers.get('X-Tenant-ID') != PROJECT \
            or headers.get('X-Instance-ID') != SERVER \
            or headers.get('X-Instance-ID-Signature') != signed:
        return 22   # curl -f: HTTP 403
    print(json.dumps(VENDOR_DATA if world.get('licensed', True) else {}))
    return 0


def main(name: str, args: list[str]) -> int:
    world_dir = os.environ['FAKE_WORLD']
    world = json.load(open(os.path.join(world_dir, 'world.json')))
    deleted = os.path.join(world_dir, 'deleted')
    device_file = os.path.join(os.environ['MDEV_DEVICES'], DEVICE)
    line = ' '.join(args)
    if name == 'sudo':
        os.execvp(args[0], args)
    if name == 'openstack' and not (os.environ.get('OS_AUTH_URL') or
                                    os.environ.get('OS_CLOUD')):
        # The real client, with no cloud selected (no openrc sourced).
        print('Missing value auth-url required for auth plugin password',
              file=sys.stderr)
        return 1
    if name == 'hostname':
        print('node1')
    elif name == 'openstack' and line.startswith('image list'):
        print('cirros-0.6.2-x86_64-disk')
    elif name == 'openstack' and line.startswith('server create'):
        open(device_file, 'w').close()
    elif name == 'openstack' and line.startswith('server show vgpu-check'):
        print({'id': SERVER, 'status': world.get('status', 'ACTIVE'),
               'project_id': PROJECT,
               'OS-EXT-SRV-ATTR:instance_name': 'instance-00000001'}[
            args[-1]])
    elif name == 'openstack' and line.startswith(
            'resource provider allocation show %s' % SERVER):
        gpu = ROOT if world.get('vgpu_on_root') else GPU
        print(json.dumps([
            {'resource_provider': ROOT, 'generation': 3,
             'resources': {'VCPU': 1, 'MEMORY_MB': 512}},
            {'resource_provider': gpu, 'generation': 5,
             'resources': {'VGPU': 1}}]))
    elif name == 'openstack' and line.startswith('resource provider show'):
        print({ROOT: {'name': 'node1', 'parent_provider_uuid': 'None'},
               GPU: {'name': 'node1_mtty_mtty',
                     'parent_provider_uuid': ROOT}}[args[3]][args[-1]])
    elif name == 'openstack' and line == 'server delete --wait vgpu-check':
        open(deleted, 'w').close()
        if world.get('freed', True):
            os.unlink(device_file)
    elif name == 'virsh' and line == 'dumpxml instance-00000001':
        source = DEVICE if world.get('in_domain', True) else 'other'
        print("<domain><devices><hostdev mode='subsystem' type='mdev'>"
              "<source><address uuid='%s'/></source></hostdev></devices>"
              "</domain>" % source)
    elif name == 'virsh' and line == 'domblklist instance-00000001':
        print(' Target   Source\n' + '-' * 40 + '\n'
              ' vda      /opt/stack/data/nova/instances/%s/disk\n'
              ' hdd      /opt/stack/data/nova/instances/%s/disk.config'
              % (SERVER, SERVER))
    elif name == 'isoinfo' and line == (
            '-R -i /opt/stack/data/nova/instances/%s/disk.config -x '
            '/openstack/latest/meta_data.json' % SERVER):
        files = [{'path': '/etc/nvidia/gridd.conf',
                  'content_path': '/content/0000'}]
        print(json.dumps({'uuid': SERVER,
                          'files': files if world.get('files', True)
                          else []}))
    elif name == 'vgpu-nova-ext' and args[-3:] == [
            'devices', '--format', 'json']:
        held = not os.path.exists(deleted) or not world.get('freed', True)
        print(json.dumps({'host': 'node1', 'devices': [
            {'device': DEVICE, 'owner': SERVER, 'gpu': 'mtty_mtty',
             'type': 'mtty-1'}] if held else []}))
    elif name == 'curl':
        return _metadata(world, args)
    elif name == 'vgpu-nova-ext' and args[-2:] == ['audit', '--ownership']:
        if not world.get('audit', True):
            print('owner.not_in_domain: device %s' % DEVICE, file=sys.stderr)
            return 1
    elif name == 'ps' and line == '-eo user:32,args':
        print('USER ARGS')
        if world.get('daemon', True):
            print('root /usr/bin/python3 /usr/local/bin/privsep-helper '
                  '--config-file /etc/nova/nova-cpu.conf --privsep_context '
                  'vgpu_nova_ext.host.privsep.vgpu_pctxt --privsep_sock_path '
                  '/tmp/tmpab12/privsep.sock')
        print('stack /usr/bin/python3 /usr/local/bin/nova-compute '
              '--config-file /etc/nova/nova-cpu.conf')
    else:
        print('fake node: unexpected command: %s %s' % (name, line),
              file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main(os.path.basename(sys.argv[0]), sys.argv[1:]))
