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
"""Reading a file an operator names: nova.conf, a token, a profile.

Checked before anything parses it, so that a wrong file is named with its
fix instead of ending in a traceback or a hang: a regular file (a FIFO
would block the reader for ever), of a sensible size, and UTF-8 text.
"""

import os
import stat

from vgpu_nova_ext import exception

#: nova.conf files are kilobytes; anything near this is the wrong file.
MAX_FILE_BYTES = 4 * 1024 * 1024


def _read_fd(fd: int, limit: int) -> bytes:
    # Plain os.read: eventlet's green file objects may close the fd.
    chunks = []
    size = 0
    while size < limit:
        chunk = os.read(fd, min(65536, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b''.join(chunks)


def read_file(path: str, what: str, limit: int = MAX_FILE_BYTES,
              hint: str = 'check the path') -> bytes:
    """A regular file's bytes, at most ``limit``; named errors.

    :param what: how the message names the file (an option, a kind).
    :raises ConfigError: naming the file, what is wrong and the fix; never
        its content.
    """
    try:
        # O_NONBLOCK: opening a FIFO does not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise exception.ConfigError(
            '%s %s does not exist; %s' % (what, path, hint))
    except OSError as exc:
        raise exception.ConfigError(
            '%s %s cannot be opened (%s); give the user %d read access to '
            'it' % (what, path, exc.strerror, os.geteuid()))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise exception.ConfigError(
                '%s %s is not a regular file (a directory, a FIFO or a '
                'device); give the path of the file itself' % (what, path))
        if info.st_size > limit:
            raise exception.ConfigError(
                '%s %s is %d bytes, larger than any such file (at most %d); '
                'is it the right file?' % (what, path, info.st_size, limit))
        data = _read_fd(fd, limit + 1)
    except OSError as exc:
        raise exception.ConfigError(
            '%s %s cannot be read (%s)' % (what, path, exc.strerror))
    finally:
        os.close(fd)
    if len(data) > limit:
        raise exception.ConfigError(
            '%s %s grew beyond %d bytes while it was read; is it the right '
            'file?' % (what, path, limit))
    return data


def read_text(path: str, what: str = 'configuration file') -> str:
    """The file's text, checked as a nova.conf is.

    :raises ConfigError: naming the file, what is wrong and the fix.
    """
    data = read_file(path, what,
                     hint='check the --config-file and --config-dir paths')
    nul = data.find(b'\0')
    if nul >= 0:
        raise exception.ConfigError(
            '%s %s holds a NUL byte on line %d: it is not a text file; give '
            'the path of nova.conf' % (what, path,
                                       data.count(b'\n', 0, nul) + 1))
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError as exc:
        raise exception.ConfigError(
            '%s %s is not UTF-8 text: byte 0x%02x on line %d; oslo.config '
            'reads nova.conf as UTF-8, so save the file as UTF-8' % (
                what, path, data[exc.start],
                data.count(b'\n', 0, exc.start) + 1))
