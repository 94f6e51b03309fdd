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
"""Reading nova.conf: the one path of the CLI and the vendordata service.

nova-compute parses its ``CONF`` itself (``--config-file`` and
``--config-dir``); the commands and the vendordata service parse theirs
here with the same two kinds of sources, in oslo.config's order (the files,
then each directory's ``*.conf`` sorted by name), and every reader of a
value (:mod:`vgpu_nova_ext.conf.devices`, the licensing settings, the
Placement session) then reads the parsed ``ConfigOpts``, inside
nova-compute and out.

Before oslo.config sees a file it is checked here, so that a wrong file is
named with its fix instead of ending in a traceback or a hang: a regular
file (a FIFO would block the reader for ever), of a nova.conf's size, and
UTF-8 text, as oslo.config decodes it.
"""

import glob
import os

from oslo_config import cfg

from vgpu_nova_ext.conf import raw
from vgpu_nova_ext import exception
from vgpu_nova_ext import files


def files_in_dirs(config_dirs) -> list[str]:
    """The ``*.conf`` files of each directory, as oslo.config reads them."""
    found = []
    for directory in config_dirs or ():
        found += sorted(glob.glob(os.path.join(directory, '*.conf')))
    return found


def parsed_files(conf: cfg.ConfigOpts) -> list[str]:
    """The files ``conf`` was parsed from, in the order they were read."""
    dirs = conf.config_dir
    if isinstance(dirs, str):
        dirs = [dirs]
    return list(conf.config_file or []) + files_in_dirs(dirs)


def check_sources(config_files, config_dirs=()) -> None:
    """Every file and directory is one oslo.config can read.

    :raises ConfigError: for the first that is not.
    """
    for directory in config_dirs or ():
        if not os.path.isdir(directory):
            raise exception.ConfigError(
                'configuration directory %s does not exist or is not a '
                'directory; check the --config-dir path' % directory)
    for path in list(config_files or ()) + files_in_dirs(config_dirs):
        files.read_text(path)


def parse(conf: cfg.ConfigOpts, config_files, config_dirs=()
          ) -> cfg.ConfigOpts:
    """Parse ``conf`` from these sources, as nova-compute parses its CONF.

    The options must be registered already (see
    :func:`vgpu_nova_ext.conf.register_all`); options registered later,
    such as the groups of each enabled type, are read from the same
    sources.

    :raises ConfigError: naming the file and the fix.
    """
    config_files = list(config_files or ())
    config_dirs = list(config_dirs or ())
    check_sources(config_files, config_dirs)
    try:
        conf(args=[], project='nova', default_config_files=config_files,
             default_config_dirs=config_dirs, use_env=False)
    except cfg.ConfigFilesNotFoundError as exc:
        raise exception.ConfigError(
            'configuration file(s) not found or not readable: %s; check the '
            '--config-file paths and their permissions' % ', '.join(
                exc.config_files))
    except cfg.ConfigFileParseError as exc:
        raise exception.ConfigError(
            'cannot parse configuration file %s: %s; it must be an ini file '
            'as nova.conf is' % (exc.config_file, exc.msg))
    except (cfg.Error, ValueError, OSError) as exc:
        raise exception.ConfigError(
            'cannot read %s: %s' % (', '.join(
                config_files + config_dirs) or 'the configuration', exc))
    return conf


def invalid(conf: cfg.ConfigOpts, group: str, name: str,
            exc: ValueError, secret: bool = False) -> str:
    """``[group] name = 'value': why`` for oslo.config's ValueError.

    oslo.config says "Value for option X from <location> is not valid:
    <why>", without the value; the value is shown as the last file that
    sets it wrote it (later files win, as in oslo.config), unless the
    option is a secret.
    """
    if secret:
        # oslo.config's reason may quote the value itself.
        return '[%s] %s: the value is not valid (not shown: a secret)' % (
            group, name)
    why = str(exc).rsplit('is not valid: ', 1)[-1]
    shown = ''
    written = raw.read(parsed_files(conf))
    if written.has_option(group, name):
        shown = ' = %r' % written.get(group, name)
    return '[%s] %s%s: %s' % (group, name, shown, why)


def register_group(conf: cfg.ConfigOpts, group: cfg.OptGroup) -> None:
    """Register a copy of ``group`` of its own.

    oslo.config keeps a shallow copy of a registered group, whose option
    table (and so every override) is shared with every other ConfigOpts
    the same group object was registered in: an override on a private
    ConfigOpts would change the global CONF.
    """
    conf.register_group(cfg.OptGroup(
        name=group.name, title=group.title, help=group.help))


def register_tolerant(conf: cfg.ConfigOpts, opts, group=None) -> None:
    """Register ``opts`` unless an option of the same name is there.

    Inside nova-compute Nova has registered the options this project
    shares with it (``[devices]``, the type groups, ``[placement]``) with
    its own help texts, and oslo.config refuses a second, different
    registration: Nova's then governs, and it reads the same values.
    """
    for opt in opts:
        try:
            conf.register_opt(opt, group=group)
        except cfg.DuplicateOptError:
            pass
