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
"""A guest's first boot, by cloud-init's own code, on a scratch root.

Run by the system's python3 with Debian's cloud-init package (not in the
test environment: cloud-init is the guest's, with its own dependencies):

    python3 cloudinit_guest.py <config drive directory> <scratch root>

It reads the config drive with cloud-init's ConfigDrive reader, writes the
injected files as DataSourceConfigDrive does, and applies the vendor data's
cloud-config with the write_files and runcmd modules. Paths in the guest
are written below the scratch root: the one change to cloud-init's way,
made by wrapping its util.write_file and util.chownbyname (this test cannot
write /etc). Prints JSON: every file written (mode, size) and the runcmd
script.
"""

import json
import os
import sys

from cloudinit.config import cc_write_files
from cloudinit import sources
from cloudinit.sources import DataSourceConfigDrive
from cloudinit.sources.helpers import openstack
from cloudinit import util


def main(drive: str, root: str) -> None:
    real_write = util.write_file
    written = {}

    def write_below_root(filename, content, mode=0o644, omode='wb',
                         **kwargs):
        path = os.path.join(root, filename.lstrip('/'))
        real_write(path, content, mode=mode, omode=omode, **kwargs)
        written[filename] = path

    util.write_file = write_below_root
    util.chownbyname = lambda *args, **kwargs: None
    results = openstack.ConfigDriveReader(drive).read_v2()
    # As DataSourceConfigDrive._get_data does, at first boot.
    DataSourceConfigDrive.write_injected_files(results.get('files'))
    runcmd = None
    vendordata2 = results.get('vendordata2')
    if vendordata2:
        raw = sources.convert_vendordata(vendordata2)
        if not raw.startswith('#cloud-config'):
            raise SystemExit('vendor data is not a cloud-config: %r'
                             % raw[:40])
        config = util.load_yaml(raw)
        cc_write_files.write_files('write_files',
                                   config.get('write_files', []),
                                   'root:root')
        if config.get('runcmd'):
            runcmd = util.shellify(config['runcmd'])
    out = {}
    for guest_path, path in written.items():
        info = os.stat(path)
        out[guest_path] = {'mode': info.st_mode & 0o7777,
                           'size': info.st_size}
    print(json.dumps({'files': out, 'runcmd': runcmd}))


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2])
