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
"""devstack's iniset/inidelete for the harness, on a real ini file.

    python3 ini.py set FILE SECTION OPTION VALUE
    python3 ini.py delete FILE SECTION OPTION
"""

import configparser
import os
import sys


def main(argv):
    action, path, section, option = argv[:4]
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    if os.path.exists(path):
        parser.read(path)
    if action == 'set':
        if section != 'DEFAULT' and not parser.has_section(section):
            parser.add_section(section)
        parser.set(section, option, argv[4])
    elif parser.has_option(section, option):
        parser.remove_option(section, option)
    with open(path, 'w') as f:
        parser.write(f)


if __name__ == '__main__':
    main(sys.argv[1:])
