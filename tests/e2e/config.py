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
"""The cloud's configuration files, as a deployment tool writes them.

One function per file; each takes the cloud's :class:`Layout` and returns
``{section: {option: value}}``, written by :func:`write`.
"""

import configparser
import dataclasses
import os

#: Every password of the cloud: loopback only, gone with the cloud.
PASSWORD = 'e2e-secret'
#: Nova's metadata API and Neutron's metadata proxy share it.
METADATA_SECRET = 'e2e-metadata-secret'
REGION = 'RegionOne'
#: The vGPU types each compute node serves (tests/e2e/v100x3.yaml): the
#: first two GPUs GRID V100DX-16Q (two a GPU), the third V100DX-32Q.
TYPES = ('nvidia-198', 'nvidia-199')
WHOLE_GPU = '0000:3d:00.0'


@dataclasses.dataclass(frozen=True)
class Ports:
    db: int
    amqp: int
    amqp_dist: int
    epmd: int
    keystone: int
    placement: int
    glance: int
    nova_api: int
    metadata: int
    vendordata: int
    memcached: int
    neutron: int


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where everything of one cloud lives."""

    base: str           # logs, data, state: removed at the end
    etc: str            # configuration files, under /etc for rootwrap
    venv: str           # the services' virtualenv
    ports: Ports
    computes: tuple[str, ...] = ('cn1', 'cn2')

    def path(self, *parts: str) -> str:
        return os.path.join(self.base, *parts)

    def conf(self, *parts: str) -> str:
        return os.path.join(self.etc, *parts)

    def bin(self, name: str) -> str:
        return os.path.join(self.venv, 'bin', name)

    def db_url(self, name: str) -> str:
        return 'mysql+pymysql://os:%s@127.0.0.1:%d/%s?charset=utf8' % (
            PASSWORD, self.ports.db, name)

    @property
    def transport_url(self) -> str:
        return 'rabbit://guest:guest@127.0.0.1:%d/' % self.ports.amqp

    @property
    def auth_url(self) -> str:
        return 'http://127.0.0.1:%d/v3' % self.ports.keystone

    def token_file(self) -> str:
        return self.conf('nvidia', 'client_configuration_token.tok')


def write(path: str, sections: dict, mode: int = 0o640,
          group: int | None = None) -> str:
    parser = configparser.RawConfigParser()
    parser.optionxform = str
    for section, options in sections.items():
        if section != 'DEFAULT':
            parser.add_section(section)
        for name, value in options.items():
            parser.set(section, name, str(value))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, 'w') as f:
        parser.write(f)
    os.chmod(path, mode)
    if group is not None:
        os.chown(path, 0, group)
    return path


def service_auth(layout: Layout, user: str) -> dict:
    """A keystoneauth password section for a service user."""
    return {'auth_type': 'password', 'auth_url': layout.auth_url,
            'username': user, 'password': PASSWORD,
            'user_domain_name': 'Default', 'project_name': 'service',
            'project_domain_name': 'Default', 'region_name': REGION}


def authtoken(layout: Layout, user: str) -> dict:
    return dict(service_auth(layout, user), www_authenticate_uri=(
        layout.auth_url), service_token_roles_required=True,
        memcached_servers='127.0.0.1:%d' % layout.ports.memcached)


def keystone(layout: Layout) -> dict:
    return {
        'DEFAULT': {'use_stderr': True},
        'database': {'connection': layout.db_url('keystone')},
        'token': {'provider': 'fernet'},
        'fernet_tokens': {'key_repository': layout.conf('fernet-keys')},
        'fernet_receipts': {'key_repository': layout.conf('fernet-keys')},
        'credential': {'key_repository': layout.conf('credential-keys')},
    }


def placement(layout: Layout) -> dict:
    return {
        'DEFAULT': {'use_stderr': True},
        'placement_database': {'connection': layout.db_url('placement')},
        'api': {'auth_strategy': 'keystone'},
        'keystone_authtoken': authtoken(layout, 'placement'),
    }


def glance(layout: Layout) -> dict:
    return {
        'DEFAULT': {'use_stderr': True, 'enabled_backends': 'local:file'},
        'database': {'connection': layout.db_url('glance')},
        'keystone_authtoken': authtoken(layout, 'glance'),
        'paste_deploy': {'flavor': 'keystone', 'config_file': os.path.join(
            layout.venv, 'etc', 'glance', 'glance-api-paste.ini')},
        'glance_store': {'default_backend': 'local'},
        'local': {'filesystem_store_datadir': layout.path('images')},
        'os_glance_staging_store': {
            'filesystem_store_datadir': layout.path('glance-staging')},
        'os_glance_tasks_store': {
            'filesystem_store_datadir': layout.path('glance-tasks')},
        'oslo_concurrency': {'lock_path': layout.path('locks', 'glance')},
    }


def neutron(layout: Layout) -> dict:
    """Neutron's API only, which Nova asks for ports and security groups.

    Servers boot with ``--nic none``: no agent, no data plane.
    """
    return {
        'DEFAULT': {'use_stderr': True, 'core_plugin': 'ml2',
                    # Neutron 29's port listing reads the port-forwarding
                    # model's back-reference on Port: that plugin must be
                    # loaded (devstack's default set has it).
                    'service_plugins': 'router,port_forwarding',
                    'auth_strategy': 'keystone',
                    'transport_url': layout.transport_url,
                    'notify_nova_on_port_status_changes': False,
                    'notify_nova_on_port_data_changes': False,
                    'api_paste_config': os.path.join(
                        layout.venv, 'etc', 'neutron', 'api-paste.ini')},
        'database': {'connection': layout.db_url('neutron')},
        'oslo_messaging_rabbit': rabbit(),
        'keystone_authtoken': authtoken(layout, 'neutron'),
        'oslo_concurrency': {'lock_path': layout.path('locks', 'neutron')},
        'ml2': {'type_drivers': 'flat', 'tenant_network_types': '',
                'mechanism_drivers': '', 'extension_drivers': ''},
    }


def rabbit() -> dict:
    """oslo.messaging's RabbitMQ options, as deployments set them.

    Quorum queues (kolla-ansible's om_enable_rabbitmq_quorum_queues,
    the default since 2024.1; openstack-ansible's oslomsg_rabbit_quorum_
    queues): the services' queues outlive a broker restart, so a cast
    sent before a consumer is back waits for it. With classic transient
    queues (oslo.messaging's default) RabbitMQ drops a message routed to
    a queue not declared again yet: a boot right after the restart stayed
    in BUILD forever, nova-api's cast to the conductor gone.
    """
    return {'rabbit_quorum_queue': True}


def nova_common(layout: Layout) -> dict:
    """What every Nova service's nova.conf holds."""
    return {
        'DEFAULT': {'transport_url': layout.transport_url,
                    'my_ip': '127.0.0.1', 'use_stderr': True,
                    'rootwrap_config': layout.conf('rootwrap.conf')},
        'api_database': {'connection': layout.db_url('nova_api')},
        'database': {'connection': layout.db_url('nova_cell1')},
        'oslo_messaging_rabbit': rabbit(),
        'keystone_authtoken': authtoken(layout, 'nova'),
        'placement': service_auth(layout, 'placement'),
        'service_user': dict(service_auth(layout, 'nova'),
                             send_service_user_token=True),
        'glance': {'region_name': REGION},
        'wsgi': {'api_paste_config': os.path.join(
            layout.venv, 'etc', 'nova', 'api-paste.ini')},
        'oslo_concurrency': {'lock_path': layout.path('locks', 'nova')},
        'neutron': dict(service_auth(layout, 'neutron'),
                        service_metadata_proxy=True,
                        metadata_proxy_shared_secret=METADATA_SECRET),
        'api': {
            'vendordata_providers': 'StaticJSON,DynamicJSON',
            'vendordata_dynamic_targets': 'cloud-init@http://127.0.0.1:%d/' % (
                layout.ports.vendordata),
            'vendordata_dynamic_read_timeout': 10,
        },
        'vendordata_dynamic_auth': service_auth(layout, 'nova'),
        'vgpu_licensing': licensing(layout),
    }


def licensing(layout: Layout) -> dict:
    return {'enabled': True,
            'client_config_token_file': layout.token_file(),
            'feature_type': 1}


def devices() -> dict:
    return {'devices': {'enabled_mdev_types': ','.join(TYPES)},
            'mdev_%s' % TYPES[0]: {},
            'mdev_%s' % TYPES[1]: {'device_addresses': WHOLE_GPU}}


def compute(layout: Layout, host: str) -> dict:
    sections = nova_common(layout)
    del sections['api_database'], sections['database']
    sections['DEFAULT'].update({
        'host': host,
        'compute_driver': 'vgpu_nova_ext_driver.LibvirtVGPUDriver',
        'instances_path': layout.path('instances'),
        'state_path': layout.path(host, 'nova'),
        # The periodic task (update_available_resource) every 10 s, so
        # that the cloud converges within the test's waits.
        'update_resources_interval': 10,
        # nova-compute killed and started again finds no domain in its
        # new fake libvirt, as after a host reboot: it starts them again.
        'resume_guests_state_on_host_boot': True,
        # Raw disks: a resize would convert them with qemu-img, which the
        # fake hypervisor's empty disks do not need (nor this machine has).
        'use_cow_images': False,
    })
    sections['oslo_concurrency'] = {
        'lock_path': layout.path(host, 'nova', 'locks')}
    sections['libvirt'] = {'virt_type': 'kvm'}
    sections.update(devices())
    sections['vgpu_nova_ext'] = {
        # The production backend on a host owned by root: reads of
        # sysfs, writes through the privsep daemon that nova-compute
        # starts with sudo nova-rootwrap; the simulated kernel (a root
        # process of its own) carries the writes out.
        'host_backend': 'sysfs',
        'sysfs_root': layout.path(host, 'host'),
        'state_path': layout.path(host, 'vgpu-nova-ext'),
        'orphan_grace_period': 30,
    }
    return sections


def vendordata(layout: Layout) -> dict:
    sections = {
        'DEFAULT': {'use_stderr': True},
        'keystone_authtoken': authtoken(layout, 'nova'),
        'placement': service_auth(layout, 'placement'),
        'vgpu_licensing': licensing(layout),
        'vgpu_vendordata': {'policy_file': layout.conf(
            'vgpu-nova-ext-policy.yaml')},
    }
    sections.update(devices())
    return sections


def rootwrap(layout: Layout) -> dict:
    return {'DEFAULT': {
        'filters_path': layout.conf('rootwrap.d'),
        'exec_dirs': ','.join((os.path.join(layout.venv, 'bin'), '/sbin',
                               '/usr/sbin', '/bin', '/usr/bin')),
        'use_syslog': False,
    }}


def sudoers(layout: Layout) -> str:
    """nova may run nova-rootwrap with this cloud's rootwrap.conf only.

    The secure_path line is openstack-ansible's for a service in a
    virtualenv: sudo finds nova-rootwrap there.
    """
    rootwrap_bin = layout.bin('nova-rootwrap')
    return ('Defaults:nova !requiretty\n'
            'Defaults:nova secure_path="%s:/usr/sbin:/usr/bin:/sbin:/bin"\n'
            'nova ALL = (root) NOPASSWD: %s %s *\n' % (
                os.path.join(layout.venv, 'bin'), rootwrap_bin,
                layout.conf('rootwrap.conf')))


def uwsgi(layout: Layout, name: str, port: int, module: str,
          env: dict) -> list[str]:
    """uWSGI's command line for one API, as deployments run them."""
    argv = [layout.bin('uwsgi'), '--http-socket', '127.0.0.1:%d' % port,
            '--module', module, '--home', layout.venv, '--master',
            '--processes', '1', '--threads', '4', '--enable-threads',
            '--die-on-term', '--need-app', '--lazy-apps', '--procname-prefix',
            'e2e-%s-' % name, '--buffer-size', '65535',
            '--hook-master-start', 'unix_signal:15 gracefully_kill_them_all',
            # uWSGI's own HTTP socket serves one request a connection: say
            # so, or a client reusing it meets a reset.
            '--add-header', 'Connection: close']
    for key, value in env.items():
        argv += ['--env', '%s=%s' % (key, value)]
    return argv
