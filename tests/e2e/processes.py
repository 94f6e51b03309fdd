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
"""The cloud's processes: each in a session of its own, logged, stopped.

No systemd: a service is a child of the test, started in a new session so
that it and whatever it starts (uWSGI's workers, the privsep daemons under
sudo) are one process group, stopped together and, past a grace period,
killed together. Each writes stdout and stderr to ``<log_dir>/<name>.log``.
"""

import dataclasses
import http.client
import os
import signal
import socket
import subprocess
import time
import typing
import urllib.error
import urllib.request


class ServiceError(Exception):
    """A service did not start, or died; names it and its log."""


@dataclasses.dataclass(frozen=True)
class Spec:
    """How one service runs."""

    name: str
    argv: tuple[str, ...]
    env: typing.Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: The account it runs as (None: the test's, root).
    user: str | None = None
    #: Ready when 127.0.0.1:port accepts a connection (None: at once).
    port: int | None = None
    #: Ready only when an HTTP GET of / there is answered (uWSGI listens
    #: before its application is loaded).
    http: bool = False
    #: Seconds it may take to be ready.
    ready_timeout: float = 90.0
    cwd: str | None = None


@dataclasses.dataclass
class _Running:
    spec: Spec
    process: subprocess.Popen


def port_open(port: int, host: str = '127.0.0.1') -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def http_answers(port: int) -> bool:
    try:
        urllib.request.urlopen('http://127.0.0.1:%d/' % port, timeout=5)
    except urllib.error.HTTPError:
        return True     # an answer all the same (401, 404 ...)
    except (OSError, http.client.HTTPException):
        return False
    return True


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Supervisor:
    """Starts, stops and kills the cloud's services."""

    def __init__(self, log_dir: str, cwd: str) -> None:
        self.log_dir = log_dir
        # Not the checkout: a service imports the installed package only.
        self.cwd = cwd
        self._running: dict[str, _Running] = {}
        #: Every spec started, by name, for restarts.
        self.specs: dict[str, Spec] = {}

    def log_path(self, name: str) -> str:
        return os.path.join(self.log_dir, name + '.log')

    def start(self, spec: Spec) -> subprocess.Popen:
        if spec.name in self._running:
            raise ServiceError('%s is already running' % spec.name)
        self.specs[spec.name] = spec
        env = dict(os.environ)
        env.update(spec.env)
        with open(self.log_path(spec.name), 'ab') as log:
            log.write(b'\n==== %s: %s\n' % (
                time.strftime('%H:%M:%S').encode(),
                ' '.join(spec.argv).encode()))
            log.flush()
            process = subprocess.Popen(
                spec.argv, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=env, cwd=spec.cwd or self.cwd,
                start_new_session=True, user=spec.user,
                group=spec.user, extra_groups=[] if spec.user else None)
        self._running[spec.name] = _Running(spec, process)
        if spec.port is not None:
            self.wait_ready(spec.name)
        return process

    def restart(self, name: str) -> subprocess.Popen:
        self.stop(name)
        return self.start(self.specs[name])

    def wait_ready(self, name: str) -> None:
        running = self._running[name]
        deadline = time.monotonic() + running.spec.ready_timeout
        ready = http_answers if running.spec.http else port_open
        while not ready(running.spec.port):
            if running.process.poll() is not None:
                raise ServiceError('%s exited with %s before it listened on '
                                   '127.0.0.1:%d; see %s' % (
                                       name, running.process.returncode,
                                       running.spec.port,
                                       self.log_path(name)))
            if time.monotonic() > deadline:
                raise ServiceError('%s did not listen on 127.0.0.1:%d within '
                                   '%d s; see %s' % (
                                       name, running.spec.port,
                                       running.spec.ready_timeout,
                                       self.log_path(name)))
            time.sleep(0.2)

    def alive(self, name: str) -> bool:
        running = self._running.get(name)
        return running is not None and running.process.poll() is None

    def stop(self, name: str, grace: float = 20.0) -> None:
        """SIGTERM to its process group; SIGKILL past ``grace`` seconds."""
        running = self._running.pop(name, None)
        if running is None:
            return
        _signal_group(running.process.pid, signal.SIGTERM)
        try:
            running.process.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        # What it started and left behind goes too.
        _signal_group(running.process.pid, signal.SIGKILL)
        try:
            running.process.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def kill(self, name: str) -> None:
        """SIGKILL to the service's own process only, as a crash does.

        What it started (a privsep daemon) is left to notice by itself.
        """
        running = self._running.pop(name)
        running.process.kill()
        running.process.wait(10)

    def stop_all(self) -> None:
        for name in reversed(list(self._running)):
            self.stop(name, grace=10.0)

    def tail(self, name: str, lines: int = 40) -> str:
        try:
            with open(self.log_path(name), 'rb') as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 200 * lines))
                text = f.read().decode(errors='replace')
        except FileNotFoundError:
            return ''
        return '\n'.join(text.splitlines()[-lines:])


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def run(argv: typing.Sequence[str], *, timeout: float = 120,
        env: typing.Mapping[str, str] | None = None,
        user: str | None = None, check: bool = True,
        log: str | None = None) -> subprocess.CompletedProcess:
    """One bounded command (a bootstrap, a db sync, the CLI)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout,
        env=full_env, user=user, group=user,
        extra_groups=[] if user else None, stdin=subprocess.DEVNULL)
    if log is not None:
        with open(log, 'a') as f:
            f.write('\n$ %s\n%s%s' % (
                ' '.join(argv), result.stdout, result.stderr))
    if check and result.returncode != 0:
        raise ServiceError('%s exited with %d: %s' % (
            ' '.join(argv[:3]), result.returncode,
            (result.stderr or result.stdout)[-2000:]))
    return result
