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
"""oslo.log for the commands and the vendordata service.

Inside nova-compute, Nova sets up logging and this project's loggers
follow it. Outside, every entry point calls :func:`set_up` first, and the
configuration files' ``[DEFAULT]`` logging options (``debug``,
``log_file``, ``log_dir``, ``log_config_append``, ``use_syslog`` ...) take
effect as soon as they are parsed (:func:`vgpu_nova_ext.conf.load` calls
:func:`apply` again). A command writes its output on stdout, so its log
goes to stderr unless ``--log-file`` or the files say otherwise.
"""

import logging as std_logging

from oslo_config import cfg
from oslo_log import log as oslo_logging

from vgpu_nova_ext import exception

LOG = oslo_logging.getLogger(__name__)
# oslo.log's own defaults, before set_defaults changes them below.
_BASE_LEVELS = tuple(oslo_logging.get_default_log_levels())

_product: str | None = None
_quiet = False


def set_up(conf: cfg.ConfigOpts, product: str, debug: bool = False,
           log_file: str | None = None, quiet: bool = False) -> None:
    """Register oslo.log's options and log as ``product``.

    :param quiet: this project's own loggers at WARNING unless debug (the
        commands, whose output is their answer).
    """
    global _product, _quiet
    _product, _quiet = product, quiet
    try:
        oslo_logging.register_options(conf)
    except cfg.ArgsAlreadyParsedError:
        # Parsed by an earlier set-up in this process (a test, a WSGI
        # server loading the application again): parsed anew after this.
        conf.clear()
        oslo_logging.register_options(conf)
    conf.set_default('use_stderr', True)
    # Set or cleared: one process may run several commands (tests).
    for name, value in (('debug', True if debug else None),
                        ('log_file', log_file)):
        if value is None:
            conf.clear_override(name)
        else:
            conf.set_override(name, value)
    apply(conf)


def apply(conf: cfg.ConfigOpts) -> None:
    """(Re)configure logging from ``conf``; nothing before :func:`set_up`."""
    if _product is None:
        return
    # Always named, so that a second set-up in one process resets it.
    # oslo.service says at INFO which of its backends it loaded, once a
    # command imports Nova's libvirt driver (os-brick imports it): nothing
    # for these commands' readers.
    levels = list(_BASE_LEVELS) + ['oslo_service.backend=WARNING'] + [
        'vgpu_nova_ext=%s' % ('WARNING' if _quiet and not conf.debug
                              else 'NOTSET')]
    oslo_logging.set_defaults(default_log_levels=levels)
    try:
        oslo_logging.setup(conf, _product)
    except oslo_logging.LogConfigError as exc:
        raise exception.ConfigError(
            '[DEFAULT] log_config_append = %s: %s; give a readable logging '
            'configuration file (Python logging.config format) or remove '
            'the option' % (conf.log_config_append, exc))


def log_values(conf: cfg.ConfigOpts, *others: cfg.ConfigOpts) -> None:
    """With ``debug``: every option's value, secret ones as ``****``.

    As OpenStack services log them at start; ``others`` are logged too.
    """
    if _product is None or not conf.debug:
        return
    for each in (conf,) + others:
        each.log_opt_values(LOG, std_logging.DEBUG)
