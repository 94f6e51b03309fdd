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
"""Open a file below a directory, never leaving it, with no race to win.

sysfs paths hold symbolic links (``class/mdev_bus/<parent>``,
``bus/mdev/devices/<uuid>``, ``bus/pci/devices/<address>``), so a write
must follow links; resolving a path first (``realpath``) and opening it
again leaves a window in which a directory can be swapped for a link. Here
the kernel follows no link: every component is opened from its directory's
file descriptor with ``O_NOFOLLOW``, a link is read and its relative
target walked the same way, and ``..`` goes back up this walk's own stack,
never above the root. Whatever is swapped meanwhile, the directory reached
lies below the root, and the names it was reached by are returned for the
caller to check before it opens the file in it (never a link).
"""

import errno
import os
import stat

#: As the kernel's own limit on links followed in one look-up.
MAX_LINKS = 40

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Refused(ValueError):
    """A path that leaves the root or is not what it must be."""


def open_below(root: str, parts: tuple[str, ...],
               flags: int) -> tuple[int, tuple[str, ...]]:
    """Open ``root/<parts...>`` with ``flags``; links resolved below root.

    :func:`walk` to its directory, then :func:`open_file`.

    :returns: the file's descriptor (the caller closes it) and the names
        that lead from ``root`` to it, links resolved.
    """
    dir_fd, names = walk(root, parts[:-1])
    try:
        return open_file(dir_fd, parts[-1], flags,
                         os.path.join(root, *names)), names + (parts[-1],)
    finally:
        os.close(dir_fd)


def walk(root: str, parts: tuple[str, ...]) -> tuple[int, tuple[str, ...]]:
    """The directory ``root/<parts...>``, every link resolved below root.

    :param root: a directory the caller trusts (the daemon's configured
        root); it is opened as it is, links and all.
    :returns: the directory's descriptor (the caller closes it) and the
        names that lead from ``root`` to it, links resolved.
    :raises Refused: a link that is absolute, climbs above ``root`` or
        loops.
    :raises OSError: as ``open`` would (ENOENT, ENOTDIR, EACCES...).
    """
    todo = [p for p in reversed(parts)]
    names: list[str] = []
    fds = [os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
    links = 0
    try:
        while todo:
            name = todo.pop()
            if name in ('', '.'):
                continue
            if name == '..':
                if not names:
                    raise Refused('%s climbs above %s' % (
                        os.path.join(root, *parts), root))
                names.pop()
                os.close(fds.pop())
                continue
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=fds[-1])
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                target = _link(fds[-1], name, root, names, exc)
                links += 1
                if links > MAX_LINKS:
                    raise Refused('%s: more than %d links (a loop?)' % (
                        os.path.join(root, *parts), MAX_LINKS))
                todo.extend(reversed(target.split('/')))
                continue
            names.append(name)
            fds.append(fd)
        return fds.pop(), tuple(names)
    finally:
        for fd in fds:
            os.close(fd)


def open_file(dir_fd: int, name: str, flags: int, shown: str) -> int:
    """The regular file ``name`` in ``dir_fd``, never through a link.

    :param flags: ``os.open`` flags; ``O_NOFOLLOW``, ``O_NONBLOCK`` and
        ``O_CLOEXEC`` are added (``O_NONBLOCK`` keeps a FIFO from blocking
        the open; it is then refused as no regular file).
    :param shown: the directory's path, for errors.
    :raises Refused: a link, or not a regular file.
    """
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK
                     | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused('%s is a link, not a file' % os.path.join(
                shown, name))
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Refused('%s is not a regular file' % os.path.join(shown, name))
    return fd


def _link(dir_fd: int, name: str, root: str, names: list[str],
          error: OSError) -> str:
    """The relative target of the link ``name``, or the open's error."""
    try:
        target = os.readlink(name, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.EINVAL:   # not a link: the open's error
            raise error
        raise
    if os.path.isabs(target):
        # sysfs links are relative; an absolute one leads out of the root.
        raise Refused('%s is a link to the absolute path %s' % (
            os.path.join(root, *names, name), target))
    return target


def open_directory(root: str, name: str, create: bool = False) -> int:
    """``root/<name>`` as a directory descriptor; never a link.

    :param create: make it (mode 0755) when it is not there.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if create:
            try:
                os.mkdir(name, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise Refused('%s is not a directory (a link?)' % (
                    os.path.join(root, name)))
            raise
    finally:
        os.close(fd)
