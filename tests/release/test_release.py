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
"""A release as it is cut, packaged and installed (``tox -e release``).

A clone of this checkout is tagged, and its sdist and wheel built as a
release job builds them (``python -m build``, pbr reading the version from
the tag); a second wheel is built from the sdist alone, as a distribution
packager builds it (no git). Then, for each supported Nova release, the
wheel goes into a clean virtualenv with that Nova, libvirt-python and
their dependencies under the release's upper-constraints (as
openstack-ansible installs a compute node), and nova-compute's own start
of the driver runs in it: tests/release/start_driver.py, in each
concurrency mode the release has.

Needs the package registry and libvirt's headers (libvirt-python is built
from its sdist, as on a compute node); skipped without them unless
``VGPU_NOVA_EXT_REQUIRE_NOVA`` is set (CI sets it).
"""

import configparser
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import venv
import zipfile

from tests import timeout

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
CONSTRAINTS = os.path.join(TOP, 'tests', 'nova', 'constraints')
#: The version the clone is tagged with.
TAG = '3.1.0'
PROJECT = 'vgpu_nova_ext'
#: The hosts' samples, installed under <prefix>/etc/vgpu-nova-ext.
SAMPLES = ('vgpu-nova-ext-vendordata.ini', 'vgpu-nova-ext-vendordata.service',
           'vgpu-nova-ext-bring-up.service', 'vgpu-nova-ext-vendordata.conf')
#: Each supported release: its Nova (as tox.ini's nova*-functional pins
#: it), its upper-constraints, and the concurrency modes nova-compute has
#: there, its default first (Nova 32: eventlet only; 33: eventlet, native
#: threads experimental; 34: native threads, eventlet deprecated).
RELEASES = {
    '2025.2': ('32.2.1', ('eventlet',)),
    '2026.1': ('33.0.2', ('eventlet', 'threading')),
    '2026.2': ('34.0.0', ('threading', 'eventlet')),
}
#: The host of the start: the simulated backend's built-in V100 host, one
#: GPU serving GRID V100DX-16Q (two a GPU).
NOVA_CONF = """[DEFAULT]
compute_driver = vgpu_nova_ext_driver.LibvirtVGPUDriver
host = release-check
state_path = {state}
instances_path = {state}/instances

[database]
# nova-compute's conductor, for a start without a cloud.
connection = sqlite:///{state}/nova.sqlite

[libvirt]
# libvirt's in-process test driver: no daemon. It is no QEMU, and Nova's
# start refuses a QEMU older than it supports; lxc is the virt_type Nova
# starts on it (the vGPU code is the driver's own, whatever the type).
connection_uri = test:///default
virt_type = lxc

[devices]
enabled_mdev_types = nvidia-198

[mdev_nvidia-198]
device_addresses = 0000:1a:00.0

[vgpu_nova_ext]
host_backend = simulated
simulated_profile = v100x8
state_path = {state}/vgpu-nova-ext
"""


def _run(*argv, env=None, cwd=None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900,
                          env=env, cwd=cwd)
    if proc.returncode:
        raise AssertionError('%s exited %d\n%s\n%s' % (
            ' '.join(argv), proc.returncode, proc.stdout[-3000:],
            proc.stderr[-3000:]))
    return proc.stdout + proc.stderr


def _missing() -> str | None:
    if shutil.which('git') is None:
        return 'git is not installed'
    if subprocess.run(['pkg-config', '--exists', 'libvirt'],
                      capture_output=True).returncode:
        return ('libvirt\'s headers are not installed (Debian: libvirt-dev '
                'pkg-config), which libvirt-python is built against')
    try:
        import build  # noqa: F401
    except ImportError:
        return 'pypa build is not installed (tox -e release installs it)'
    return None


class Artifacts:
    """The tagged clone's sdist and wheels, built once for the module."""

    def __init__(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix='vgpu-nova-ext-release-')
        self.src = os.path.join(self.tmp, 'src')
        self.dist = os.path.join(self.tmp, 'dist')
        self.from_sdist = os.path.join(self.tmp, 'from-sdist')
        _run('git', 'clone', '-q', '--no-hardlinks', TOP, self.src)
        self._commit_working_tree()
        # As a release is tagged: an annotated tag on the commit.
        _run('git', *self.GIT_USER, 'tag', '-a', TAG, '-m',
             'vgpu-nova-ext %s' % TAG, cwd=self.src)
        _run(sys.executable, '-m', 'build', '--sdist', '--wheel',
             '--outdir', self.dist, self.src)
        self.sdist = self._one(self.dist, '.tar.gz')
        self.wheel = self._one(self.dist, '.whl')
        # As a distribution builds it: from the sdist, without git.
        _run(sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
             '-w', self.from_sdist, self.sdist)
        self.wheel_from_sdist = self._one(self.from_sdist, '.whl')

    GIT_USER = ('-c', 'user.name=Release', '-c',
                'user.email=release@example.org')

    def _commit_working_tree(self) -> None:
        """The checkout's changes, committed in the clone.

        What is tested is the tree as it is, not only its last commit.
        """
        diff = subprocess.run(['git', 'diff', 'HEAD', '--binary'],
                              cwd=TOP, capture_output=True, check=True,
                              timeout=120).stdout
        if diff:
            subprocess.run(['git', 'apply', '--index', '-'], input=diff,
                           cwd=self.src, capture_output=True, check=True,
                           timeout=120)
        untracked = _run('git', 'ls-files', '--others', '--exclude-standard',
                         '-z', cwd=TOP).split('\0')
        for name in filter(None, untracked):
            target = os.path.join(self.src, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(os.path.join(TOP, name), target)
        _run('git', 'add', '-A', cwd=self.src)
        _run('git', *self.GIT_USER, 'commit', '-q', '--allow-empty', '-m',
             'The working tree', cwd=self.src)

    @staticmethod
    def _one(directory: str, suffix: str) -> str:
        found = [f for f in os.listdir(directory) if f.endswith(suffix)]
        assert len(found) == 1, (directory, found)
        return os.path.join(directory, found[0])

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


_ARTIFACTS: list[Artifacts] = []


def artifacts() -> Artifacts:
    if not _ARTIFACTS:
        _ARTIFACTS.append(Artifacts())
    return _ARTIFACTS[0]


def tearDownModule():
    while _ARTIFACTS:
        _ARTIFACTS.pop().close()


def _wheel_files(path: str) -> list[str]:
    with zipfile.ZipFile(path) as whl:
        return sorted(whl.namelist())


def _wheel_metadata(path: str, name: str) -> str:
    with zipfile.ZipFile(path) as whl:
        dist_info = [n for n in whl.namelist()
                     if n.endswith('.dist-info/' + name)]
        return whl.read(dist_info[0]).decode()


class ReleaseTestCase(timeout.TestCase):

    def setUp(self):
        super().setUp()
        missing = _missing()
        if missing:
            if os.environ.get('VGPU_NOVA_EXT_REQUIRE_NOVA'):
                self.fail(missing)
            self.skipTest(missing)
        self.built = artifacts()


class TestArtifacts(ReleaseTestCase):

    def test_version_from_the_tag(self):
        self.assertEqual('%s-%s.tar.gz' % (PROJECT, TAG),
                         os.path.basename(self.built.sdist))
        for wheel in (self.built.wheel, self.built.wheel_from_sdist):
            self.assertEqual('%s-%s-py3-none-any.whl' % (PROJECT, TAG),
                             os.path.basename(wheel))
            self.assertIn('\nVersion: %s\n' % TAG,
                          _wheel_metadata(wheel, 'METADATA'))

    def test_sdist_carries_the_tree(self):
        with tarfile.open(self.built.sdist) as tar:
            names = {n.split('/', 1)[1] for n in tar.getnames() if '/' in n}
        # pbr leaves out .gitignore, of no use outside git.
        tracked = set(_run('git', 'ls-files', cwd=self.built.src).split()
                      ) - {'.gitignore'}
        # Every tracked file (pbr's file list is git's), and what pbr
        # writes from git: the authors and the change log.
        self.assertEqual(set(), tracked - names)
        self.assertIn('AUTHORS', names)
        self.assertIn('ChangeLog', names)
        self.assertFalse([n for n in names if n.startswith(('.tox/', '.venv',
                                                            '.git/'))])

    def test_wheel_carries_the_samples_and_plugins(self):
        files = _wheel_files(self.built.wheel)
        data = '%s-%s.data/data/etc/vgpu-nova-ext/' % (PROJECT, TAG)
        self.assertEqual(sorted(data + s for s in SAMPLES),
                         [f for f in files if f.startswith(data)])
        self.assertIn('nova/virt/vgpu_nova_ext_driver.py', files)
        # nova is no namespace package: its __init__ files are Nova's.
        self.assertNotIn('nova/__init__.py', files)
        self.assertNotIn('nova/virt/__init__.py', files)
        entry_points = configparser.ConfigParser()
        entry_points.read_string(_wheel_metadata(self.built.wheel,
                                                 'entry_points.txt'))
        self.assertEqual(
            {'libvirt', 'sysfs', 'vfio', 'simulated'},
            set(entry_points['vgpu_nova_ext.host_backends']))
        self.assertEqual({'vgpu-nova-ext', 'vgpu-nova-ext-vendordata'},
                         set(entry_points['console_scripts']))
        self.assertIn('vgpu_nova_ext', entry_points['oslo.config.opts'])
        self.assertIn('vgpu_nova_ext', entry_points['oslo.policy.policies'])
        # nova-api's validation of the vgpu_nova_ext: flavor extra specs.
        self.assertEqual(
            'vgpu_nova_ext.nova.extra_specs',
            entry_points['nova.api.extra_spec_validators']['vgpu_nova_ext'])

    def test_wheel_from_the_sdist_is_the_same(self):
        # A distribution's build has no git: the sdist must carry all that
        # pbr reads from it. Only pbr.json (the git commit) is git's own.
        git_only = '%s-%s.dist-info/pbr.json' % (PROJECT, TAG)
        self.assertIn(git_only, _wheel_files(self.built.wheel))
        self.assertEqual(
            [f for f in _wheel_files(self.built.wheel) if f != git_only],
            _wheel_files(self.built.wheel_from_sdist))
        for name in ('METADATA', 'entry_points.txt'):
            self.assertEqual(
                _wheel_metadata(self.built.wheel, name),
                _wheel_metadata(self.built.wheel_from_sdist, name), name)


class TestStartsWithEachNova(ReleaseTestCase):
    """The wheel, one Nova, its upper-constraints: nova-compute's start."""

    def install(self, series: str) -> str:
        nova, _modes = RELEASES[series]
        env = os.path.join(self.built.tmp, 'env-%s' % series)
        venv.create(env, with_pip=True, clear=True)
        python = os.path.join(env, 'bin', 'python')
        _run(python, '-m', 'pip', 'install', '-q', '-c',
             os.path.join(CONSTRAINTS, 'upper-constraints-%s.txt' % series),
             self.built.wheel, 'nova==%s' % nova, 'libvirt-python')
        # pip's resolver honoured the constraints; nothing installed
        # contradicts another's requirements either.
        _run(python, '-m', 'pip', 'check')
        return env

    def start(self, series: str) -> None:
        nova, modes = RELEASES[series]
        env = self.install(series)
        bindir = os.path.join(env, 'bin')
        state = os.path.join(self.built.tmp, 'state-%s' % series)
        os.makedirs(os.path.join(state, 'instances'))
        conf = os.path.join(state, 'nova.conf')
        with open(conf, 'w') as f:
            f.write(NOVA_CONF.format(state=state))
        _run(os.path.join(bindir, 'nova-manage'), '--config-file', conf,
             'db', 'sync', '--local_cell')
        base_env = {k: v for k, v in os.environ.items()
                    if k != 'OS_NOVA_DISABLE_EVENTLET_PATCHING'}
        for index, mode in enumerate(modes):
            run_env = dict(base_env)
            if index:
                # The release's other mode, chosen as operators choose it.
                run_env['OS_NOVA_DISABLE_EVENTLET_PATCHING'] = (
                    '1' if mode == 'threading' else '0')
            result = os.path.join(state, 'start-%s.json' % mode)
            _run(os.path.join(bindir, 'python'),
                 os.path.join(HERE, 'start_driver.py'), conf, result,
                 env=run_env, cwd=state)
            with open(result) as f:
                seen = json.load(f)
            self.assertEqual('vgpu_nova_ext.nova.driver.LibvirtVGPUDriver',
                             seen['driver'])
            self.assertEqual(nova, seen['nova'])
            self.assertEqual(mode, seen['mode'])
            self.assertEqual(1, len(seen['nodes']))
            node = seen['nodes'][0]
            gpu = seen['providers'].pop('%s_pci_0000_1a_00_0' % node)
            self.assertEqual(2, gpu['inventory']['VGPU']['total'])
            self.assertIn('CUSTOM_VGPU_NVIDIA_198', gpu['traits'])
            self.assertIn('CUSTOM_VGPU_V100DX_16Q', gpu['traits'])
            # Only the root besides: one GPU is enabled.
            self.assertEqual([node], list(seen['providers']))
            # The state directory and the host's in it: nova-compute's
            # only, as the option's help says.
            for directory in ('vgpu-nova-ext',
                              os.path.join('vgpu-nova-ext', node)):
                self.assertEqual(0o700, os.stat(os.path.join(
                    state, directory)).st_mode & 0o777, directory)
        # The commands and the option entry point from the same install.
        check = subprocess.run(
            [os.path.join(bindir, 'vgpu-nova-ext'), '--config-file', conf,
             'check'], capture_output=True, text=True, timeout=300)
        self.assertEqual(0, check.returncode, check.stderr[-3000:])
        self.assertIn('0 error(s), 0 warning(s)', check.stdout)
        # The answer only: no library's warning or log line on stderr.
        self.assertEqual('', check.stderr)
        out = _run(os.path.join(bindir, 'oslo-config-generator'),
                   '--namespace', 'vgpu_nova_ext')
        self.assertIn('[vgpu_nova_ext]', out)

    def test_nova_32(self):
        self.start('2025.2')

    def test_nova_33(self):
        self.start('2026.1')

    def test_nova_34(self):
        self.start('2026.2')
