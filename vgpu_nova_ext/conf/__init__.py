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
"""Configuration.

The project's own groups live on the global ``CONF``; inside nova-compute
that is Nova's ``CONF``, parsed by Nova, and it holds the options shared
with Nova (``[devices]``, the type groups, ``[placement]``) as Nova
registered them. The commands and the vendordata service parse with
:func:`load`: ``CONF`` for their own groups (and oslo.privsep's, which reads
the global ``CONF``), and from the same sources a private ``ConfigOpts`` of
the shared options. Those stay off the global ``CONF`` because the driver
module, once imported (``check`` does), registers Nova's own definitions
there, and oslo.config refuses a second, different one. Either way each
shared option has one reader (:func:`vgpu_nova_ext.conf.devices.read`,
:func:`vgpu_nova_ext.conf.placement.load_session`).
"""

from oslo_config import cfg

from vgpu_nova_ext.conf import devices
from vgpu_nova_ext.conf import extension
from vgpu_nova_ext.conf import licensing
from vgpu_nova_ext.conf import loader
from vgpu_nova_ext.conf import logs
from vgpu_nova_ext.conf import placement
from vgpu_nova_ext.conf import rootwrap
from vgpu_nova_ext.conf import state
from vgpu_nova_ext.conf import vendordata
from vgpu_nova_ext import exception

CONF = cfg.CONF
DEFAULT_CONFIG_FILES = ('/etc/nova/nova.conf',)


def register_opts(conf: cfg.ConfigOpts) -> None:
    """This project's own groups."""
    extension.register_opts(conf)
    licensing.register_opts(conf)
    vendordata.register_opts(conf)


register_opts(CONF)


#: Options that name a directory: relative, they would depend on the
#: working directory of whichever process reads them.
_ABSOLUTE = (('vgpu_nova_ext', 'state_path'), ('vgpu_nova_ext', 'sysfs_root'),
             ('vgpu_nova_ext', 'mdevctl_path'))


def validate(conf: cfg.ConfigOpts) -> None:
    """Every value of this project's own groups, read once.

    oslo.config checks a value only when it is read; reading them all here,
    at start, turns a bad one into one message naming each option, its
    value as written and what is expected, instead of a traceback later.

    :raises ConfigError: with every bad value.
    """
    problems = []
    for group, opts in (extension.list_opts() + licensing.list_opts()
                        + vendordata.list_opts()):
        for opt in opts:
            try:
                value = conf[group.name][opt.dest]
            except ValueError as exc:
                problems.append(loader.invalid(conf, group.name, opt.dest,
                                               exc, secret=opt.secret))
                continue
            if (group.name, opt.dest) in _ABSOLUTE and value is not None \
                    and not value.startswith('/'):
                problems.append('[%s] %s = %r: give an absolute path' % (
                    group.name, opt.dest, value))
    if problems:
        raise exception.ConfigError(
            'invalid configuration: %s; fix these values in the '
            'configuration file' % '; '.join(problems))


def shared_conf() -> cfg.ConfigOpts:
    """A ``ConfigOpts`` of the options shared with Nova, not yet parsed."""
    conf = cfg.ConfigOpts()
    devices.register_opts(conf)
    placement.register_opts(conf)
    conf.register_opt(state.NOVA_STATE_PATH)
    rootwrap.register_opts(conf)
    return conf


def load(config_files, config_dirs=()) -> cfg.ConfigOpts:
    """Parse the configuration as nova-compute parses its own.

    ``config_files`` and ``config_dirs`` are the ``--config-file`` and
    ``--config-dir`` of the command line (each directory's ``*.conf`` files
    after the files, by name). ``CONF`` is parsed from them.

    :returns: the options shared with Nova, parsed from the same sources.
    :raises ConfigError: naming the file and the fix.
    """
    loader.parse(CONF, config_files, config_dirs)
    logs.apply(CONF)
    validate(CONF)
    shared = loader.parse(shared_conf(), config_files, config_dirs)
    logs.log_values(CONF, shared)
    return shared
