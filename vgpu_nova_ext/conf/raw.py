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
"""nova.conf as plain ini text, for what oslo.config cannot tell.

Not a second way to read the configuration (that is
:func:`vgpu_nova_ext.conf.load` for the commands and the vendordata
service, :func:`vgpu_nova_ext.nova.conf.from_nova_conf` inside
nova-compute): oslo.config gives an option's value, not how it was
written, and three things need the writing:

- which name the operator used (``enabled_vgpu_types`` or
  ``enabled_mdev_types``, ``[vgpu_<type>]`` or ``[mdev_<type>]``: a
  deprecated name resolves silently), so that a message names what they
  wrote;
- the text of a value oslo.config refuses, which its error leaves out;
- a few of Nova's own options (``compute_driver``, ``force_config_drive``,
  ``[api] vendordata_*``) that the commands look at but must not register:
  ``check`` imports the driver, which registers Nova's definitions, and
  oslo.config refuses a second, different one.
"""

import configparser


def read(config_files) -> configparser.ConfigParser:
    """The files, later ones winning.

    Unreadable ones are skipped: oslo.config and
    :func:`vgpu_nova_ext.files.read_text` report those themselves.
    """
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    for path in config_files:
        try:
            parser.read(path, encoding='utf-8')
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue
    return parser


def option(config_files, section: str, name: str) -> str | None:
    """The value as written in the last file that sets it, or None."""
    parser = read(config_files)
    if parser.has_option(section, name):
        return parser.get(section, name).strip()
    return None
