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
"""This project's own small HTTP servers: where they listen, and how.

The vendordata service's development server and the metrics endpoint:
one thread per connection, each connection given a time limit (its
handler's ``timeout``), so a slow or idle client holds its own thread only
and never the others; IPv4 or IPv6 by the address given.
"""

import ipaddress
import socket
import socketserver
from wsgiref import simple_server

#: Connections the kernel queues before the server accepts them (Nova's
#: API workers boot many guests at once; the default of 5 resets them).
BACKLOG = 128


def is_loopback(listen: str) -> bool:
    """Whether a listen address is a loopback one (``localhost`` too)."""
    try:
        return ipaddress.ip_address(listen).is_loopback
    except ValueError:
        return listen == 'localhost'


class ThreadingWSGIServer(socketserver.ThreadingMixIn,
                          simple_server.WSGIServer):
    daemon_threads = True
    request_queue_size = BACKLOG


class ThreadingWSGIServerV6(ThreadingWSGIServer):
    address_family = socket.AF_INET6


def make_server(host: str, port: int, app, handler_class
                ) -> ThreadingWSGIServer:
    """A server of ``app`` on ``host``:``port`` (not yet serving).

    :param handler_class: a ``WSGIRequestHandler`` whose ``timeout`` is
        the seconds a client may take to send its request or read the
        answer.
    """
    server_class = ThreadingWSGIServerV6 if ':' in host \
        else ThreadingWSGIServer
    return simple_server.make_server(host, port, app,
                                     server_class=server_class,
                                     handler_class=handler_class)
