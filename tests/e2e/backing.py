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
"""The cloud's backing services, Debian's: MariaDB, RabbitMQ, memcached.

Each with its data under the cloud's directory and every listener on
127.0.0.1, none of the machine's own instance touched.
"""

import os
import typing

from tests.e2e import config
from tests.e2e import processes


def start(supervisor: processes.Supervisor, layout: config.Layout,
          databases: typing.Iterable[str]) -> None:
    _mariadb(supervisor, layout, databases)
    _rabbitmq(supervisor, layout)
    # keystonemiddleware's token cache, as deployments have it.
    supervisor.start(processes.Spec(
        'memcached', ('memcached', '-l', '127.0.0.1', '-U', '0', '-p',
                      str(layout.ports.memcached), '-u', 'nobody', '-m',
                      '64'), port=layout.ports.memcached))


def _mariadb(supervisor: processes.Supervisor, layout: config.Layout,
             databases: typing.Iterable[str]) -> None:
    data = layout.path('mysql')
    processes.run(['mariadb-install-db', '--no-defaults',
                   '--datadir=' + data, '--user=root',
                   '--auth-root-authentication-method=normal',
                   '--skip-test-db'],
                  log=supervisor.log_path('mariadb-install'))
    socket = layout.path('mysql.sock')
    supervisor.start(processes.Spec(
        'mariadb', ('mariadbd', '--no-defaults', '--datadir=' + data,
                    '--socket=' + socket, '--port=%d' % layout.ports.db,
                    '--bind-address=127.0.0.1', '--user=root',
                    '--skip-name-resolve', '--innodb-buffer-pool-size=64M',
                    '--innodb-flush-log-at-trx-commit=0',
                    '--max-connections=500'),
        port=layout.ports.db))
    statements = ["CREATE USER 'os'@'127.0.0.1' IDENTIFIED BY '%s'" %
                  config.PASSWORD]
    for name in databases:
        statements.append('CREATE DATABASE %s CHARACTER SET utf8' % name)
        statements.append("GRANT ALL ON %s.* TO 'os'@'127.0.0.1'" % name)
    processes.run(['mariadb', '--no-defaults', '-S', socket, '-uroot', '-e',
                   '; '.join(statements)])


def _rabbitmq(supervisor: processes.Supervisor,
              layout: config.Layout) -> None:
    home = layout.path('rabbitmq')
    os.makedirs(home, exist_ok=True)
    with open(os.path.join(home, 'enabled_plugins'), 'w') as f:
        f.write('[].\n')
    ports = layout.ports
    # Every listener on loopback: AMQP, Erlang distribution, epmd.
    env = {
        'HOME': home, 'RABBITMQ_NODENAME': 'e2e@localhost',
        'RABBITMQ_NODE_IP_ADDRESS': '127.0.0.1',
        'RABBITMQ_NODE_PORT': str(ports.amqp),
        'RABBITMQ_DIST_PORT': str(ports.amqp_dist),
        'RABBITMQ_MNESIA_BASE': os.path.join(home, 'mnesia'),
        'RABBITMQ_LOG_BASE': os.path.join(home, 'log'),
        'RABBITMQ_ENABLED_PLUGINS_FILE': os.path.join(home, 'enabled_plugins'),
        'RABBITMQ_PID_FILE': os.path.join(home, 'pid'),
        'RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS':
            '-kernel inet_dist_use_interface {127,0,0,1}',
        'ERL_EPMD_ADDRESS': '127.0.0.1',
        'ERL_EPMD_PORT': str(ports.epmd),
    }
    # epmd in the foreground, supervised: the one RabbitMQ starts itself
    # daemonizes and would outlive the cloud.
    supervisor.start(processes.Spec(
        'epmd', ('epmd', '-address', '127.0.0.1', '-port', str(ports.epmd)),
        port=ports.epmd))
    supervisor.start(processes.Spec(
        'rabbitmq', ('/usr/lib/rabbitmq/bin/rabbitmq-server',), env=env,
        port=ports.amqp, ready_timeout=120))
