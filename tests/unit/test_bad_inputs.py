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
"""The corpus of bad inputs: each is answered, none breaks anything.

Every case is a command line over files made for it (a nova.conf, a
profile, a state directory, a sysfs tree) and what the answer must name.
For each the command exits non-zero with a message naming the thing, the
value and the fix, prints no traceback, returns well inside the test's
time limit (a FIFO or /dev/zero must not hang it), and writes nothing it
was not asked to. Grow it: every input someone could get wrong, or try.
"""

from collections.abc import Callable
import dataclasses
import os
import shutil
import sqlite3

from tests.unit import base
from tests.unit import test_cli
from vgpu_nova_ext.host import simulated

GOOD_CONF = '[devices]\nenabled_mdev_types = nvidia-18\n'


@dataclasses.dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    """The command line; ``{tmp}`` is the case's own directory."""
    names: tuple[str, ...]
    """What the answer must say (the value, the option, the fix)."""
    files: tuple[tuple[str, bytes], ...] = ()
    """Files to make below ``{tmp}`` first."""
    setup: Callable[[str], None] | None = None
    code: int = 2


def conf(text: str | bytes, name: str = 'nova.conf') -> tuple:
    data = text if isinstance(text, bytes) else text.encode()
    return ((name, data),)


def bad_value(group: str, option: str, value: str, *names: str) -> Case:
    return Case(('--config-file', '{tmp}/nova.conf', '--simulate', 'm60',
                 'inventory'),
                ('[%s] %s' % (group, option), value) + names,
                files=conf(GOOD_CONF + '[%s]\n%s = %s\n' % (
                    group, option, value)))


def mig_layout(profile: str, type_id: str, address: str, layout: str,
               *names: str) -> Case:
    """``check`` on a host whose nova.conf declares this MIG layout."""
    return Case(('--config-file', '{tmp}/nova.conf', '--simulate', profile,
                 'check'), names,
                files=conf('[devices]\nenabled_mdev_types = %s\n'
                           '[mdev_%s]\ndevice_addresses = %s\n'
                           'mig_gpu_instances = %s\n' % (
                               type_id, type_id, address, layout)))


def mkfifo(name: str) -> Callable[[str], None]:
    return lambda tmp: os.mkfifo(os.path.join(tmp, name))


def _ledger(tmp: str) -> str:
    state = os.path.join(tmp, 'state', 'h')
    os.makedirs(state, mode=0o700)
    return os.path.join(state, 'ledger.sqlite')


def corrupt_ledger(tmp: str) -> None:
    with open(_ledger(tmp), 'wb') as f:
        f.write(b'this is not a database, but a file in its place\n' * 100)


def truncated_ledger(tmp: str) -> None:
    path = _ledger(tmp)
    db = sqlite3.connect(path)
    db.execute('CREATE TABLE t (x)')
    db.executemany('INSERT INTO t VALUES (?)', [('x' * 500,)] * 100)
    db.commit()
    db.close()
    with open(path, 'r+b') as f:
        f.truncate(1500)


def directory_ledger(tmp: str) -> None:
    os.mkdir(_ledger(tmp))


def planted_link(tmp: str) -> None:
    os.symlink(os.path.join(tmp, 'elsewhere'), _ledger(tmp))


def open_state_dir(tmp: str) -> None:
    os.chmod(os.path.dirname(_ledger(tmp)), 0o777)


def _type_dir(tmp: str) -> str:
    """A type directory of a laid-out M60 host below ``tmp``."""
    simulated.lay_out(simulated.load_profile('m60'), tmp)
    return os.path.join(os.path.realpath(os.path.join(
        tmp, 'sys', 'class', 'mdev_bus', '0000:84:00.0')),
        'mdev_supported_types', 'nvidia-18')


def sysfs_fifo(tmp: str) -> None:
    path = os.path.join(_type_dir(tmp), 'available_instances')
    os.unlink(path)
    os.mkfifo(path)


def sysfs_endless(tmp: str) -> None:
    path = os.path.join(_type_dir(tmp), 'name')
    os.unlink(path)
    os.symlink('/dev/zero', path)


def sysfs_huge(tmp: str) -> None:
    with open(os.path.join(_type_dir(tmp), 'description'), 'w') as f:
        f.write('x' * 1024 * 1024)


def sysfs_link_out(tmp: str) -> None:
    _type_dir(tmp)
    link = os.path.join(tmp, 'sys', 'class', 'mdev_bus', '0000:84:00.0')
    os.unlink(link)
    os.symlink('../../../../outside', link)
    os.mkdir(os.path.join(tmp, 'outside'))


def sysfs_not_a_number(tmp: str) -> None:
    with open(os.path.join(_type_dir(tmp), 'available_instances'),
              'w') as f:
        f.write('many\n')


def sysfs_beyond_any_gpu(tmp: str) -> None:
    with open(os.path.join(_type_dir(tmp), 'available_instances'),
              'w') as f:
        f.write('99999999999999999999\n')


def profile(text: str) -> tuple:
    return (('host.yaml', text.encode()),)


def _m60_with(replace: str, by: str) -> str:
    text = simulated.load_profile('m60').text
    assert replace in text, replace
    return text.replace(replace, by, 1)


SYSFS = ('--config-file', '{tmp}/nova.conf', '--sysfs-root', '{tmp}',
         'inventory')
LEDGER_CONF = ('--config-file', '{tmp}/nova.conf', '--simulate', 'm60',
               '--state-path', '{tmp}/state', '--host', 'h', 'devices')
LEDGER = ('--simulate', 'm60', '--state-path', '{tmp}/state', '--host', 'h',
          'devices')
CORPUS = {
    # -- configuration files ---------------------------------------------
    'nova.conf not UTF-8': Case(
        ('--config-file', '{tmp}/nova.conf', 'inventory'),
        ('{tmp}/nova.conf', 'not UTF-8', '0xff', 'line 2', 'save'),
        files=conf(b'[devices]\nenabled_mdev_types = nvidia-18\xff\n')),
    'nova.conf binary': Case(
        ('--config-file', '{tmp}/nova.conf', 'check'),
        ('{tmp}/nova.conf', 'NUL byte'),
        files=conf(b'\x7fELF\x02\x01\x01\x00\x00\x00')),
    'nova.conf a FIFO': Case(
        ('--config-file', '{tmp}/nova.conf', 'inventory'),
        ('{tmp}/nova.conf', 'not a regular file'),
        setup=mkfifo('nova.conf')),
    'nova.conf /dev/zero': Case(
        ('--config-file', '/dev/zero', 'inventory'),
        ('/dev/zero', 'not a regular file')),
    'nova.conf a directory': Case(
        ('--config-file', '{tmp}', 'inventory'),
        ('{tmp}', 'not a regular file')),
    'nova.conf too large': Case(
        ('--config-file', '{tmp}/nova.conf', 'inventory'),
        ('{tmp}/nova.conf', 'larger than any'),
        files=conf(GOOD_CONF + '#' * (5 * 1024 * 1024))),
    'nova.conf missing': Case(
        ('--config-file', '{tmp}/nowhere.conf', 'inventory'),
        ('{tmp}/nowhere.conf', 'does not exist', '--config-file')),
    'config dir missing': Case(
        ('--config-dir', '{tmp}/nova.conf.d', 'inventory'),
        ('{tmp}/nova.conf.d', 'not a directory', '--config-dir')),
    'snippet not UTF-8': Case(
        ('--config-dir', '{tmp}/d', '--simulate', 'm60', 'inventory'),
        ('{tmp}/d/50-vgpu.conf', 'not UTF-8'),
        setup=lambda tmp: os.mkdir(os.path.join(tmp, 'd')),
        files=conf(b'[devices]\n# caf\xe9\n', 'd/50-vgpu.conf')),
    'nova.conf without a section': Case(
        ('--config-file', '{tmp}/nova.conf', 'inventory'),
        ('{tmp}/nova.conf', 'cannot parse', 'ini file'),
        files=conf('enabled_mdev_types = nvidia-18\n')),
    'enabled type not an id': Case(
        ('--config-file', '{tmp}/nova.conf', '--simulate', 'm60',
         'inventory'),
        ('enabled_mdev_types', "'../nvidia-18'", 'mdev_supported_types'),
        files=conf('[devices]\nenabled_mdev_types = ../nvidia-18\n')),
    'mdev_class lower case': bad_value(
        'mdev_nvidia-18', 'mdev_class', 'gpu', 'CUSTOM_<NAME>'),
    'max_instances zero': bad_value(
        'mdev_nvidia-18', 'max_instances', '0', 'at least 1'),
    'max_unit not a number': bad_value(
        'mdev_nvidia-18', 'max_unit', 'two', 'whole number'),
    'max_unit beyond any integer Placement takes': bad_value(
        'mdev_nvidia-18', 'max_unit', '99999999999999999999999999',
        '2147483647'),
    'reserved beyond any integer Placement takes': bad_value(
        'mdev_nvidia-18', 'reserved', '2147483648', '2147483647'),
    'reserved negative': bad_value(
        'mdev_nvidia-18', 'reserved', '-1', 'at least 0'),
    'feature_type unknown': bad_value(
        'mdev_nvidia-18', 'feature_type', '3', '0, 1, 2 or 4'),
    'MIG layout not in mig-parted words': bad_value(
        'mdev_nvidia-18', 'mig_gpu_instances', '1g18gb=7',
        '<profile>:<count>', '1g.18gb:7'),
    'MIG layout count zero': bad_value(
        'mdev_nvidia-18', 'mig_gpu_instances', '1g.18gb:0', '>= 1'),
    'MIG layout that does not fit': mig_layout(
        'h200-vfio', 'nvidia-1414', '0000:19:00.0', '1g.18gb:8',
        '[mdev_nvidia-1414] mig_gpu_instances', '1g.18gb: 8',
        '0000:19:00.0', '7 fit', 'free slices: 7', 'nvidia-smi mig -lgipp'),
    'MIG layout with a profile the GPU lacks': mig_layout(
        'h200-vfio', 'nvidia-1414', '0000:19:00.0', '1g.10gb:7',
        '[mdev_nvidia-1414] mig_gpu_instances', '1g.10gb',
        'not one this GPU has', '1g.18gb'),
    'MIG layout on the mdev bus': mig_layout(
        'a100-sriov', 'nvidia-472', '0000:41:00.0', '3g.20gb:2',
        '[mdev_nvidia-472] mig_gpu_instances', '0000:41:00.0', 'mdev bus',
        'carve by hand'),
    'MIG layout on a virtual function': mig_layout(
        'h200-vfio', 'nvidia-1414', '0000:19:00.4', '1g.18gb:7',
        '[mdev_nvidia-1414] device_addresses', '0000:19:00.4', 'whole GPU',
        'physical GPU'),
    'licensing vendor typo': Case(
        ('--config-file', '{tmp}/nova.conf', '--simulate', 'm60', 'license',
         'render', '--mdev-type', 'nvidia-18'),
        ('[vgpu_licensing] vendor', "'nvidai'", 'nvidia, generic'),
        files=conf(GOOD_CONF + '[vgpu_licensing]\nenabled = true\n'
                   'vendor = nvidai\nserver_address = 10.0.0.1\n')),
    'licensing vendor typo in check': Case(
        ('--config-file', '{tmp}/nova.conf', '--simulate', 'm60', 'check'),
        ('[vgpu_licensing] vendor', "'nvidai'"),
        files=conf(GOOD_CONF + '[vgpu_licensing]\nenabled = true\n'
                   'vendor = nvidai\nserver_address = 10.0.0.1\n')),
    'licensing port out of range': Case(
        ('--config-file', '{tmp}/nova.conf', '--simulate', 'm60', 'license',
         'render', '--mdev-type', 'nvidia-18'),
        ('server_port', '70000'),
        files=conf(GOOD_CONF + '[vgpu_licensing]\nenabled = true\n'
                   'server_address = 10.0.0.1\nserver_port = 70000\n')),
    'licensing enabled not a boolean': Case(
        ('--config-file', '{tmp}/nova.conf', '--simulate', 'm60', 'license',
         'render', '--mdev-type', 'nvidia-18'),
        ('[vgpu_licensing] enabled', 'maybe'),
        files=conf(GOOD_CONF + '[vgpu_licensing]\nenabled = maybe\n')),
    'token file a FIFO': Case(
        ('--config-file', '{tmp}/nova.conf', '--simulate', 'm60', 'license',
         'render', '--mdev-type', 'nvidia-18'),
        ('client_config_token_file', '{tmp}/token', 'regular file'),
        setup=mkfifo('token'),
        files=conf(GOOD_CONF + '[vgpu_licensing]\nenabled = true\n'
                   'client_config_token_file = {tmp}/token\n')),
    'backend unknown': Case(
        ('--config-file', '{tmp}/nova.conf', '--state-path', '{tmp}/state',
         '--host', 'h', 'devices'),
        ('host_backend', "'nope'", 'libvirt'),
        files=conf(GOOD_CONF + '[vgpu_nova_ext]\nhost_backend = nope\n')),
    'free_device_policy unknown': Case(
        LEDGER_CONF, ('[vgpu_nova_ext] free_device_policy', "'burn'",
                      'remove, keep'),
        files=conf(GOOD_CONF + '[vgpu_nova_ext]\nfree_device_policy = '
                   'burn\n')),
    'orphan_grace_period negative': Case(
        LEDGER_CONF, ('[vgpu_nova_ext] orphan_grace_period', "'-1'"),
        files=conf(GOOD_CONF + '[vgpu_nova_ext]\norphan_grace_period = '
                   '-1\n')),
    'device_timeout zero': Case(
        LEDGER_CONF, ('[vgpu_nova_ext] device_timeout', "'0'", '0.1'),
        files=conf(GOOD_CONF + '[vgpu_nova_ext]\ndevice_timeout = 0\n')),
    'state_path relative': Case(
        ('--config-file', '{tmp}/nova.conf', '--simulate', 'm60', 'check'),
        ('[vgpu_nova_ext] state_path', "'lib/vgpu'", 'absolute path'),
        files=conf(GOOD_CONF + '[vgpu_nova_ext]\nstate_path = lib/vgpu\n')),
    'vendordata port out of range': Case(
        ('--config-file', '{tmp}/nova.conf', '--simulate', 'm60',
         'inventory'),
        ('[vgpu_vendordata] port', "'99999'"),
        files=conf(GOOD_CONF + '[vgpu_vendordata]\nport = 99999\n')),
    'placement timeout negative': Case(
        ('--config-file', '{tmp}/nova.conf', '--simulate', 'm60', 'audit'),
        ('[placement]', 'timeout'),
        files=conf(GOOD_CONF + '[placement]\nauth_type = admin_token\n'
                   'endpoint = http://127.0.0.1:9/\ntoken = x\n'
                   'timeout = -1\n')),
    'placement auth_type unknown': Case(
        ('--config-file', '{tmp}/nova.conf', '--simulate', 'm60', 'audit'),
        ('[placement] auth_type', 'passwd', 'password'),
        files=conf(GOOD_CONF + '[placement]\nauth_type = passwd\n')),
    # -- sysfs content ---------------------------------------------------
    'sysfs attribute a FIFO': Case(
        SYSFS, ('/sys/', 'available_instances', 'not a sysfs attribute'),
        setup=sysfs_fifo, files=conf(GOOD_CONF)),
    'sysfs attribute /dev/zero': Case(
        SYSFS, ('/sys/', 'nvidia-18/name', 'symbolic link'),
        setup=sysfs_endless, files=conf(GOOD_CONF)),
    'sysfs attribute huge': Case(
        SYSFS, ('nvidia-18/description', 'more than 65536 bytes'),
        setup=sysfs_huge, files=conf(GOOD_CONF)),
    'sysfs link out of the root': Case(
        SYSFS, ('0000:84:00.0', 'outside /sys'), setup=sysfs_link_out,
        files=conf(GOOD_CONF)),
    'sysfs number not a number': Case(
        SYSFS, ('available_instances', "'many'", 'whole number'),
        setup=sysfs_not_a_number, files=conf(GOOD_CONF)),
    'sysfs room beyond what a GPU holds': Case(
        SYSFS, ('0000:84:00.0', '99999999999999999999', 'more than a GPU '
                'can hold of it (4)', 'reported with 4'),
        setup=sysfs_beyond_any_gpu, files=conf(GOOD_CONF), code=0),
    # -- simulated host profiles -----------------------------------------
    'profile nested beyond the interpreter\'s depth': Case(
        ('--simulate', '{tmp}/host.yaml', 'inventory'),
        ('{tmp}/host.yaml', 'nests its values deeper'),
        files=profile('a: ' + '[' * 100000 + ']' * 100000 + '\n')),
    'profile alias bomb': Case(
        ('--simulate', '{tmp}/host.yaml', 'inventory'),
        ('{tmp}/host.yaml', 'aliases'),
        files=profile('a: &a [x, x, x, x, x, x, x, x, x]\n'
                      'b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n'
                      'c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n'
                      'models: {m: {sharing: time, types: *c}}\n')),
    'profile type id a path': Case(
        ('--simulate', '{tmp}/host.yaml', 'inventory'),
        ('{tmp}/host.yaml', "'../../../../etc/x'", 'type id'),
        files=profile(_m60_with('nvidia-18', '../../../../etc/x'))),
    'profile sysfs_path out of sys': Case(
        ('--simulate', '{tmp}/host.yaml', 'inventory'),
        ('{tmp}/host.yaml', 'sysfs_path', 'relative path below sys/'),
        files=profile(_m60_with('sysfs_path: "pci0000:80',
                                'sysfs_path: "../../../pci0000:80'))),
    'profile not YAML': Case(
        ('--simulate', '{tmp}/host.yaml', 'inventory'),
        ('{tmp}/host.yaml', 'not valid YAML'),
        files=profile('models: [unclosed\n')),
    'profile a FIFO': Case(
        ('--simulate', '{tmp}/host.yaml', 'inventory'),
        ('{tmp}/host.yaml', 'not a regular file'),
        setup=mkfifo('host.yaml')),
    'profile unknown name': Case(
        ('--simulate', 'h100', 'inventory'),
        ("'h100'", 'built-in', 'm60')),
    # -- command-line values ---------------------------------------------
    'host name a path': Case(
        ('--simulate', 'm60', '--state-path', '{tmp}/state', '--host',
         '../x', 'devices'),
        ("'../x'", '--host')),
    'sysfs root without sys': Case(
        ('--sysfs-root', '{tmp}', 'inventory'),
        ('--sysfs-root {tmp}', 'sys/')),
    'sysfs root whose sys is no sysfs': Case(
        ('--sysfs-root', '{tmp}', 'inventory'),
        ('--sysfs-root {tmp}', 'bus/, class/, devices/',
         'not a sysfs tree'),
        setup=lambda tmp: os.makedirs(os.path.join(tmp, 'sys', 'kernel'))),
    'remove-foreign a path': Case(
        ('--simulate', 'm60', '--state-path', '{tmp}/state', '--host', 'h',
         'reconcile', '--remove-foreign', '../../pci/devices/0000:84:00.0'),
        ("'../../pci/devices/0000:84:00.0'",)),
    # -- the ledger and its directory ------------------------------------
    'ledger corrupt': Case(
        LEDGER, ('{tmp}/state/h/ledger.sqlite', 'moved away'),
        setup=corrupt_ledger),
    'ledger corrupt, as check says it': Case(
        LEDGER[:-1] + ('check',),
        ('{tmp}/state/h/ledger.sqlite', 'moved away', 'before nova-compute '
         'starts'), setup=corrupt_ledger),
    'ledger truncated': Case(
        LEDGER, ('{tmp}/state/h/ledger.sqlite',), setup=truncated_ledger),
    'ledger a directory': Case(
        LEDGER, ('{tmp}/state/h/ledger.sqlite',), setup=directory_ledger),
    'ledger a planted link': Case(
        LEDGER, ('{tmp}/state/h/ledger.sqlite', 'symbolic link',
                 '{tmp}/elsewhere'), setup=planted_link),
    'state directory open to all': Case(
        LEDGER, ('{tmp}/state/h', '777', 'chmod 0700'),
        setup=open_state_dir),
}


class TestBadInputs(test_cli.CLITestCase):

    def run_case(self, case: Case) -> None:
        tmp = os.path.join(self.root, 'case')
        os.mkdir(tmp)
        self.addCleanup(shutil.rmtree, tmp, True)
        if case.setup:
            case.setup(tmp)
        for path, data in case.files:
            with open(os.path.join(tmp, path), 'wb') as f:
                f.write(data.replace(b'{tmp}', tmp.encode()))
        before = base.tree_state(tmp)
        argv = [a.replace('{tmp}', tmp) for a in case.argv]
        code, out, err = self.run_cli(*argv)
        text = out + err
        self.assertNoTraceback(text)
        self.assertEqual(case.code, code, text)
        for wanted in case.names:
            self.assertIn(wanted.replace('{tmp}', tmp), text)
        self.assertEqual(before, base.tree_state(tmp),
                         'something was written')


def _add_tests() -> None:
    """One test per case, named after it, so each fails on its own."""
    for name, case in CORPUS.items():
        method = 'test_' + ''.join(c if c.isalnum() else '_'
                                   for c in name.lower())
        setattr(TestBadInputs, method,
                lambda self, case=case: self.run_case(case))


_add_tests()
