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
"""A whole cloud on this machine: every service a process of its own.

Debian's MariaDB and RabbitMQ; Keystone, Placement, Glance, nova-api and
nova-metadata-api under uWSGI; nova-conductor, nova-scheduler and two
nova-compute services (``cn1`` under native threads, ``cn2`` under
eventlet) as the unprivileged ``nova`` account, each on a simulated host
owned by root that it writes through its privsep daemon (``sudo
nova-rootwrap``); this project's vendordata service under uWSGI behind
keystonemiddleware. All on 127.0.0.1, all started and stopped here, every
log in one directory. Run as root (it adds the ``nova`` account, a sudoers
file and a directory under /etc, and takes them away at the end).

``python -m tests.e2e.cloud [--keep]``: bring a cloud up and print how to
reach it; with ``--keep`` it stays up until interrupted.
"""

import argparse
import atexit
import contextlib
import dataclasses
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from tests.e2e import backing
from tests.e2e import config
from tests.e2e import processes
from tests.e2e import sim_kernel

HERE = os.path.dirname(os.path.abspath(__file__))
#: The account nova-compute runs as.
NOVA_USER = 'nova'
#: The licensing token the guests get (a made-up one, never logged).
TOKEN = 'eyJhbGciOiJSUzI1NiJ9.ZTJlLXRva2Vu.ZTJlLXNpZ25hdHVyZQ'
DATABASES = ('keystone', 'placement', 'glance', 'neutron', 'nova_api',
             'nova_cell0', 'nova_cell1')
#: What the cloud runs of the machine's own: Debian's packages
#: (mariadb-server, rabbitmq-server, memcached, sudo, genisoimage), which
#: .ci/run installs.
PROGRAMS = ('mariadbd', 'mariadb-install-db', 'mariadb', 'epmd',
            '/usr/lib/rabbitmq/bin/rabbitmq-server', 'memcached', 'sudo',
            'useradd', 'genisoimage', 'isoinfo')


def missing_prerequisites() -> list[str]:
    """Why this machine cannot run the cloud; empty when it can."""
    missing = [p for p in PROGRAMS if not shutil.which(p)]
    reasons = ['not on this machine: %s (apt-get install mariadb-server '
               'rabbitmq-server memcached sudo genisoimage)' % ', '.join(
                   missing)] if missing else []
    if os.geteuid() != 0:
        reasons.append('not root: the cloud adds the nova account, a '
                       'sudoers file and /etc/vgpu-nova-ext-e2e/')
    return reasons


class Cloud:
    """Brings the cloud up, drives its services, and takes it down."""

    def __init__(self, base: str | None = None) -> None:
        missing = missing_prerequisites()
        if missing:
            raise processes.ServiceError('the e2e cloud cannot run here: '
                                         + '; '.join(missing))
        self.base = base or tempfile.mkdtemp(prefix='vgpu-nova-ext-e2e-')
        os.chmod(self.base, 0o755)
        ports = config.Ports(*(processes.free_port() for _ in range(
            len(dataclasses.fields(config.Ports)))))
        self.layout = config.Layout(
            base=self.base,
            etc=os.path.join('/etc/vgpu-nova-ext-e2e',
                             os.path.basename(self.base)),
            venv=sys.prefix, ports=ports)
        os.makedirs(self.layout.path('logs'), exist_ok=True)
        self.supervisor = processes.Supervisor(
            self.layout.path('logs'), self.base)
        self._created_user = False
        self._down = False
        self._sudoers = '/etc/sudoers.d/vgpu-nova-ext-e2e-%s' % (
            os.path.basename(self.base).replace('.', '_'))

    @property
    def log_dir(self) -> str:
        return self.layout.path('logs')

    # -- up ---------------------------------------------------------------
    def up(self) -> None:
        # Whatever ends the run (a failure, SIGTERM from timeout, ^C), no
        # process and nothing it added stays behind.
        atexit.register(self.down, keep_files=True)
        signal.signal(signal.SIGTERM, _interrupt)
        self._account()
        self._check_reachable()
        backing.start(self.supervisor, self.layout, DATABASES)
        self._keystone()
        self._catalog()
        self._placement()
        self._glance()
        self._neutron()
        self._nova()
        self._vendordata()
        for host in self.layout.computes:
            self._compute(host)
        self.wait_for_computes()

    def _log(self, name: str) -> str:
        return self.supervisor.log_path(name)

    def _account(self) -> None:
        try:
            pwd.getpwnam(NOVA_USER)
        except KeyError:
            processes.run(['useradd', '--system', '--user-group',
                           '--no-create-home', '--home-dir', '/nonexistent',
                           '--shell', '/usr/sbin/nologin', NOVA_USER])
            self._created_user = True
        self.nova = pwd.getpwnam(NOVA_USER)

    def _check_reachable(self) -> None:
        """The nova account must reach the virtualenv and this script."""
        python = self.layout.bin('python')
        result = processes.run([python, '-c', 'import nova, vgpu_nova_ext'],
                               user=NOVA_USER, check=False)
        if result.returncode != 0:
            raise processes.ServiceError(
                'the nova account cannot run %s (%s): every directory above '
                'the virtualenv must be searchable by others (chmod o+x), '
                'and its Python must not live under /root; run the e2e from '
                'tox -e e2e, which makes it from Debian\'s python3' % (
                    python, result.stderr.strip()[-300:]))

    def _uwsgi(self, name: str, port: int, module: str, env: dict) -> None:
        self.supervisor.start(processes.Spec(
            name, tuple(config.uwsgi(self.layout, name, port, module, env)),
            port=port, http=True))

    def _keystone(self) -> None:
        conf = config.write(self.layout.conf('keystone', 'keystone.conf'),
                            config.keystone(self.layout))
        manage = [self.layout.bin('keystone-manage'), '--config-file', conf]
        log = self._log('keystone-manage')
        processes.run(manage + ['db_sync'], timeout=600, log=log)
        for setup in ('fernet_setup', 'credential_setup'):
            processes.run(manage + [setup, '--keystone-user', 'root',
                                    '--keystone-group', 'root'], log=log)
        url = 'http://127.0.0.1:%d/v3' % self.layout.ports.keystone
        processes.run(manage + [
            'bootstrap', '--bootstrap-password', config.PASSWORD,
            '--bootstrap-admin-url', url, '--bootstrap-internal-url', url,
            '--bootstrap-public-url', url,
            '--bootstrap-region-id', config.REGION], log=log)
        self._uwsgi('keystone', self.layout.ports.keystone,
                    'keystone.wsgi.api:application',
                    {'OS_KEYSTONE_CONFIG_FILES': conf})

    def openstack(self, *args: str, user: str = 'admin',
                  project: str = 'admin', parse: bool = True,
                  check: bool = True, timeout: float = 120):
        """The openstack CLI, as ``user`` of ``project``; JSON parsed."""
        env = {
            'OS_AUTH_URL': self.layout.auth_url, 'OS_USERNAME': user,
            'OS_PASSWORD': config.PASSWORD, 'OS_PROJECT_NAME': project,
            'OS_USER_DOMAIN_NAME': 'Default',
            'OS_PROJECT_DOMAIN_NAME': 'Default',
            'OS_REGION_NAME': config.REGION, 'OS_IDENTITY_API_VERSION': '3',
            'OS_INTERFACE': 'public',
        }
        argv = [self.layout.bin('openstack')] + list(args)
        if parse:
            argv += ['-f', 'json']
        result = processes.run(argv, env=env, timeout=timeout, check=check,
                               log=self._log('openstack-cli'))
        if not parse or result.returncode != 0:
            return result
        return json.loads(result.stdout) if result.stdout.strip() else None

    def _catalog(self) -> None:
        os_ = self.openstack
        # keystone-manage bootstrap made the admin, member, reader and
        # service roles.
        os_('project', 'create', '--domain', 'Default', 'service')
        for user in ('nova', 'placement', 'glance', 'neutron'):
            os_('user', 'create', '--domain', 'Default', '--password',
                config.PASSWORD, user)
            for role in ('admin', 'service'):
                os_('role', 'add', '--project', 'service', '--user', user,
                    role, parse=False)
        os_('project', 'create', '--domain', 'Default', 'demo')
        os_('user', 'create', '--domain', 'Default', '--password',
            config.PASSWORD, 'demo')
        os_('role', 'add', '--project', 'demo', '--user', 'demo', 'member',
            parse=False)
        ports = self.layout.ports
        for kind, name, url in (
                ('compute', 'nova', 'http://127.0.0.1:%d/v2.1' %
                 ports.nova_api),
                ('placement', 'placement', 'http://127.0.0.1:%d' %
                 ports.placement),
                ('image', 'glance', 'http://127.0.0.1:%d' % ports.glance),
                ('network', 'neutron', 'http://127.0.0.1:%d' %
                 ports.neutron)):
            service = os_('service', 'create', '--name', name, kind)
            for interface in ('public', 'internal', 'admin'):
                os_('endpoint', 'create', '--region', config.REGION,
                    service['id'], interface, url)

    def _placement(self) -> None:
        conf = config.write(self.layout.conf('placement', 'placement.conf'),
                            config.placement(self.layout))
        env = {'OS_PLACEMENT_CONFIG_DIR': self.layout.conf('placement')}
        processes.run([self.layout.bin('placement-manage'), '--config-file',
                       conf, 'db', 'sync'], timeout=600,
                      log=self._log('placement-manage'))
        self._uwsgi('placement', self.layout.ports.placement,
                    'placement.wsgi.api:application', env)

    def _glance(self) -> None:
        conf = config.write(self.layout.conf('glance', 'glance-api.conf'),
                            config.glance(self.layout))
        processes.run([self.layout.bin('glance-manage'), '--config-file',
                       conf, 'db_sync'], timeout=600,
                      log=self._log('glance-manage'))
        self._uwsgi('glance', self.layout.ports.glance,
                    'glance.wsgi.api:application',
                    {'OS_GLANCE_CONFIG_DIR': self.layout.conf('glance')})

    def _neutron(self) -> None:
        conf = config.write(self.layout.conf('neutron', 'neutron.conf'),
                            config.neutron(self.layout))
        processes.run([self.layout.bin('neutron-db-manage'), '--config-file',
                       conf, 'upgrade', 'heads'], timeout=900,
                      log=self._log('neutron-db-manage'))
        self._uwsgi('neutron', self.layout.ports.neutron,
                    'neutron.wsgi.api:application',
                    {'OS_NEUTRON_CONFIG_DIR': self.layout.conf('neutron'),
                     'OS_NEUTRON_CONFIG_FILES': 'neutron.conf'})
        # Neutron 29 answers a port listing with a 500 ("Port has no
        # attribute port_forwardings") until an earlier query has had
        # SQLAlchemy configure its mappers (the back-reference is made
        # then): as a deployment's agents would, ask it something first.
        self.openstack('network', 'list')

    def _nova(self) -> None:
        self.nova_conf = config.write(
            self.layout.conf('nova', 'nova.conf'),
            config.nova_common(self.layout))
        self._token()
        manage = [self.layout.bin('nova-manage'), '--config-file',
                  self.nova_conf]
        log = self._log('nova-manage')
        processes.run(manage + ['api_db', 'sync'], timeout=600, log=log)
        processes.run(manage + ['cell_v2', 'map_cell0',
                                '--database_connection',
                                self.layout.db_url('nova_cell0')], log=log)
        processes.run(manage + ['db', 'sync'], timeout=900, log=log)
        processes.run(manage + ['cell_v2', 'create_cell', '--name', 'cell1',
                                '--transport-url', self.layout.transport_url,
                                '--database_connection',
                                self.layout.db_url('nova_cell1')], log=log)
        # nova-api reads its paste pipeline from the directory's
        # api-paste.ini, then nova.conf.
        shutil.copy(os.path.join(self.layout.venv, 'etc', 'nova',
                                 'api-paste.ini'), self.layout.conf('nova'))
        env = {'OS_NOVA_CONFIG_DIR': self.layout.conf('nova')}
        self._uwsgi('nova-api', self.layout.ports.nova_api,
                    'nova.wsgi.osapi_compute:application', env)
        self._uwsgi('nova-metadata-api', self.layout.ports.metadata,
                    'nova.wsgi.metadata:application', env)
        for binary in ('nova-conductor', 'nova-scheduler'):
            self.supervisor.start(processes.Spec(
                binary, (self.layout.bin(binary), '--config-file',
                         self.nova_conf)))
        self._rootwrap()

    def _token(self) -> None:
        path = self.layout.token_file()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w') as f:
            f.write(TOKEN)
        # nova-compute reads it as nova; the vendordata service as root.
        os.chown(path, self.nova.pw_uid, self.nova.pw_gid)
        os.chmod(os.path.dirname(path), 0o755)

    def _rootwrap(self) -> None:
        config.write(self.layout.conf('rootwrap.conf'),
                     config.rootwrap(self.layout), mode=0o644)
        filters = self.layout.conf('rootwrap.d')
        os.makedirs(filters, exist_ok=True)
        # Nova's filters only: oslo.rootwrap admits privsep-helper, which
        # starts this project's daemons too, whatever the filters say.
        shutil.copy(os.path.join(self.layout.venv, 'etc', 'nova',
                                 'rootwrap.d', 'compute.filters'), filters)
        fd = os.open(self._sudoers, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                     0o440)
        with os.fdopen(fd, 'w') as f:
            f.write(config.sudoers(self.layout))
        processes.run(['visudo', '-c', '-f', self._sudoers])

    def _vendordata(self) -> None:
        """The service as the shipped uWSGI ini runs it (from the wheel)."""
        conf = config.write(self.layout.conf('vendordata', 'nova.conf'),
                            config.vendordata(self.layout))
        port = self.layout.ports.vendordata
        ini = os.path.join(self.layout.venv, 'etc', 'vgpu-nova-ext',
                           'vgpu-nova-ext-vendordata.ini')
        self.supervisor.start(processes.Spec(
            'vendordata', (self.layout.bin('uwsgi'), '--ini', ini,
                           '--virtualenv', self.layout.venv),
            env={'VGPU_NOVA_EXT_VENDORDATA_BIND': '127.0.0.1:%d' % port,
                 'VGPU_NOVA_EXT_CONFIG_FILES': conf},
            port=port, http=True))

    def _compute(self, host: str) -> None:
        layout = self.layout
        for path, owner, mode in (
                (layout.path(host), 0, 0o755),
                (layout.path(host, 'nova'), self.nova.pw_uid, 0o700),
                (layout.path(host, 'vgpu-nova-ext'), self.nova.pw_uid, 0o700),
                (layout.path('instances'), self.nova.pw_uid, 0o755)):
            os.makedirs(path, exist_ok=True)
            os.chown(path, owner, self.nova.pw_gid if owner else 0)
            os.chmod(path, mode)
        conf = config.write(layout.conf(host, 'nova.conf'),
                            config.compute(layout, host),
                            group=self.nova.pw_gid)
        os.chmod(layout.conf(host), 0o755)
        # The host's kernel, as root: the tree is laid out before
        # nova-compute reads it.
        profile = os.path.join(HERE, 'v100x3.yaml')
        self.supervisor.start(processes.Spec(
            'kernel-' + host, (layout.bin('python'),
                               os.path.join(HERE, 'sim_kernel.py'), profile,
                               layout.path(host, 'host'))))
        deadline = time.monotonic() + 60
        while not os.path.exists(layout.path(host, 'host', sim_kernel.READY)):
            if time.monotonic() > deadline:
                raise processes.ServiceError(
                    'the simulated host of %s was not laid out; see %s' % (
                        host, self._log('kernel-' + host)))
            time.sleep(0.1)
        launcher = layout.path('bin', 'fake_compute.py')
        os.makedirs(os.path.dirname(launcher), exist_ok=True)
        shutil.copy(os.path.join(HERE, 'fake_compute.py'), launcher)
        os.chmod(launcher, 0o644)
        # cn1 under native threads (Nova 34's default), cn2 under eventlet.
        threading = '1' if host == self.layout.computes[0] else '0'
        self.supervisor.start(processes.Spec(
            'nova-compute-' + host,
            (layout.bin('python'), launcher, '--config-file', conf),
            env={'VGPU_E2E_HOST': host,
                 'VGPU_E2E_DOMAINS': self.domains_file(host),
                 # A service's PATH, not root's (pyenv's shims under /root).
                 'PATH': '%s:/usr/local/sbin:/usr/local/bin:/usr/sbin:'
                         '/usr/bin:/sbin:/bin' % os.path.dirname(
                             layout.bin('python')),
                 'OS_NOVA_DISABLE_EVENTLET_PATCHING': threading,
                 'HOME': layout.path(host, 'nova')},
            user=NOVA_USER, cwd=layout.path(host, 'nova')))

    def domains_file(self, host: str) -> str:
        """Where the host's fake hypervisor lists its domains."""
        return self.layout.path(host, 'nova', 'domains.json')

    def wait_for_computes(self, timeout: float = 180) -> None:
        """Both compute services up and their GPU providers in Placement."""
        deadline = time.monotonic() + timeout
        want = set(self.layout.computes)
        while True:
            services = self.openstack('compute', 'service', 'list',
                                      '--service', 'nova-compute')
            up = {s['Host'] for s in services if s['State'] == 'up'}
            providers = {p['name'] for p in self.openstack(
                'resource', 'provider', 'list')}
            gpus = {h for h in want if any(
                n.startswith(h + '_pci_') for n in providers)}
            if up >= want and gpus >= want:
                # Map the new hosts to cell1, as devstack does after
                # starting its computes.
                processes.run([self.layout.bin('nova-manage'),
                               '--config-file', self.nova_conf, 'cell_v2',
                               'discover_hosts', '--verbose'],
                              log=self._log('nova-manage'))
                return
            for host in want:
                if not self.supervisor.alive('nova-compute-' + host):
                    raise processes.ServiceError(
                        'nova-compute on %s exited; see %s' % (
                            host, self._log('nova-compute-' + host)))
            if time.monotonic() > deadline:
                raise processes.ServiceError(
                    'compute services up: %s, with GPU providers: %s, of %s '
                    'within %d s' % (sorted(up), sorted(gpus), sorted(want),
                                     timeout))
            time.sleep(2)

    # -- down -------------------------------------------------------------
    def down(self, keep_files: bool = False) -> None:
        """Every process stopped, the account, sudoers and /etc removed."""
        if self._down:
            return
        self._down = True
        self.supervisor.stop_all()
        # A privsep daemon whose nova-compute was killed, anything left.
        subprocess.run(['pkill', '-KILL', '-f', self.base], check=False)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._sudoers)
        shutil.rmtree(self.layout.etc, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(self.layout.etc))
        if self._created_user:
            processes.run(['userdel', NOVA_USER], check=False)
        if not keep_files:
            shutil.rmtree(self.base, ignore_errors=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt('signal %d' % signum)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--keep', action='store_true',
                        help='keep the cloud up until interrupted (^C)')
    args = parser.parse_args(argv)
    cloud = Cloud()
    try:
        cloud.up()
        print('cloud up: OS_AUTH_URL=%s, admin or demo, password %s; logs '
              'in %s' % (cloud.layout.auth_url, config.PASSWORD,
                         cloud.log_dir))
        if args.keep:
            signals = {signal.SIGINT, signal.SIGTERM}
            signal.pthread_sigmask(signal.SIG_BLOCK, signals)
            signal.sigwait(signals)
    finally:
        cloud.down(keep_files=args.keep)
    return 0


if __name__ == '__main__':
    sys.exit(main())
