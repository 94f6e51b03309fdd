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
"""The host findings of ``vgpu-nova-ext check``: state directory, privsep.

What nova-compute needs of the host before it can own a device: a state
directory that belongs to the user it runs as, and a privsep daemon that
can start when that user is not root.
"""

import os
import pwd
import select
import signal
import stat

from vgpu_nova_ext.devices import ledger as ledger_mod
from vgpu_nova_ext import findings
from vgpu_nova_ext.host import privsep

#: Backends whose devices are written by this process (through privsep).
WRITING_BACKENDS = ('libvirt', 'sysfs', 'vfio')
#: How long ``check`` waits for the privsep daemon to start.
PROBE_TIMEOUT = 30.0


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return 'uid %d' % uid


def state_dir_findings(path: str) -> list[findings.Finding]:
    option = '[vgpu_nova_ext] state_path'
    fix_create = ('install -d -o <nova-compute\'s user> -m 0700 %s' % path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return [findings.Finding(
            findings.STATE_MISSING, findings.WARNING, option, path,
            'the state directory does not exist yet; nova-compute creates '
            'it only if it may write its parent', fix_create)]
    except OSError as exc:
        return [findings.Finding(
            findings.STATE_UNREADABLE, findings.ERROR, option, path,
            'cannot read the state directory: %s' % exc.strerror,
            fix_create)]
    if not stat.S_ISDIR(info.st_mode):
        return [findings.Finding(
            findings.STATE_NOT_DIR, findings.ERROR, option, path,
            'is not a directory', 'remove it, then %s' % fix_create)]
    problems = []
    euid = os.geteuid()
    if euid != 0 and info.st_uid != euid:
        problems.append(findings.Finding(
            findings.STATE_OWNER, findings.ERROR, option, path,
            'belongs to %s, not to %s who runs this check: nova-compute '
            'running as %s could not keep its ledger there' % (
                _user(info.st_uid), _user(euid), _user(euid)),
            'chown -R %s %s' % (_user(euid), path)))
    if ledger_mod.on_read_only_mount(path):
        problems.append(findings.Finding(
            findings.STATE_READ_ONLY, findings.ERROR, option, path,
            'is on a read-only file system: nova-compute cannot keep its '
            'ledger there', 'mount it read-write, or set state_path to a '
            'directory on a writable volume'))
    if stat.S_IMODE(info.st_mode) & 0o022:
        problems.append(findings.Finding(
            findings.STATE_WRITABLE, findings.ERROR, option, path,
            'mode %o lets other users write in it: they could replace the '
            'ledger or plant links the service would write through, so '
            'nova-compute refuses it' % stat.S_IMODE(info.st_mode),
            'chmod 0700 %s' % path))
    elif stat.S_IMODE(info.st_mode) & 0o077:
        problems.append(findings.Finding(
            findings.STATE_MODE, findings.WARNING, option, path,
            'mode %o lets other users read the ledger (owner %s)' % (
                stat.S_IMODE(info.st_mode), _user(info.st_uid)),
            'chmod 0700 %s' % path))
    return problems


def privsep_findings(backend: str, mig: bool = False,
                     timeout: float = PROBE_TIMEOUT) -> list[findings.Finding]:
    """Whether the privsep daemons start for this (unprivileged) user.

    :param mig: a MIG layout is declared: the MIG context must start too.
    """
    if os.geteuid() == 0:
        return []
    contexts = []
    if backend in WRITING_BACKENDS:
        contexts.append((privsep.CFG_SECTION, privsep.vgpu_pctxt,
                         'the host writes'))
    if mig:
        contexts.append((privsep.MIG_CFG_SECTION, privsep.vgpu_mig_pctxt,
                         'the MIG layout steps'))
    problems = []
    for section, context, what in contexts:
        error = _probe_privsep(context, timeout)
        if error is None:
            continue
        problems.append(findings.Finding(
            findings.PRIVSEP_START, findings.ERROR,
            '[%s] helper_command' % section,
            privsep.helper_command(section),
            'the privsep daemon that makes %s cannot start (%s)' % (
                what, error),
            'let this user run Nova\'s root helper as root without a '
            'password, as every deployment does for nova-compute: '
            '"<user> ALL = (root) NOPASSWD: <path of nova-rootwrap> '
            '<rootwrap_config> *" in /etc/sudoers.d (see the operator '
            'guide)'))
    return problems


def _probe_privsep(context, timeout: float) -> str | None:
    """Start the daemon once, as nova-compute would; its error or None.

    In a child of its own session, with no terminal and stdin on
    /dev/null: a sudo that wants a password fails (nova-compute has no one
    to type it either) instead of asking on the operator's terminal, and a
    helper that hangs is ended, with its children, after ``timeout`` s.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: reports through the pipe, never returns
        code = 1
        try:
            os.close(read_end)
            os.setsid()
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            try:
                context.start()
                message = ''
            except Exception as exc:
                message = '%s: %s' % (type(exc).__name__, exc)
            os.write(write_end, message.encode() or b'ok')
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], timeout)
        answer = os.read(read_end, 65536).decode(errors='replace') \
            if ready else None
    finally:
        os.close(read_end)
        try:
            # The child leads its own session: this ends it, the helper
            # and a daemon that started.
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
    if answer is None:
        return ('no answer within %d s: a helper asking for a password, '
                'or one that hangs' % timeout)
    if answer == 'ok':
        return None
    return answer or 'the probe ended without an answer'
