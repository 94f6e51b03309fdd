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
"""The forms in which operators write the vGPU options, and what each means.

Read by the commands' reader (tests/unit/test_conf.py) and, through Nova's
own option registration and command-line parsing, by the driver's
(tests/nova/test_conf_nova.py): both must find the same.
"""

import dataclasses
import os
import textwrap


@dataclasses.dataclass(frozen=True)
class Form:
    files: tuple[str, ...]
    """nova.conf and any further --config-file, in order."""
    snippets: tuple[tuple[str, str], ...] = ()
    """(name, text) in one --config-dir (nova.conf.d/)."""
    expected: dict = dataclasses.field(default_factory=dict)
    """type id -> (device_addresses, mdev_class, max_instances, max_unit,
    reserved)."""


FORMS = {
    'new names': Form(files=("""
        [devices]
        enabled_mdev_types = nvidia-35, nvidia-36

        [mdev_nvidia-35]
        device_addresses = 0000:84:00.0
        max_unit = 2
        reserved = 1

        [mdev_nvidia-36]
        mdev_class = CUSTOM_NVIDIA_36
        max_instances = 4
        """,), expected={
        'nvidia-35': (('0000:84:00.0',), 'VGPU', None, 2, 1),
        'nvidia-36': ((), 'CUSTOM_NVIDIA_36', 4, 1, 0)}),
    # Nova reads only device_addresses under the old group name; this
    # project's own options are read there too.
    'old names': Form(files=("""
        [devices]
        enabled_vgpu_types = nvidia-35, nvidia-36

        [vgpu_nvidia-35]
        device_addresses = 0000:84:00.0
        max_unit = 2
        reserved = 1
        max_instances = 3

        [vgpu_nvidia-36]
        mdev_class = CUSTOM_IGNORED
        """,), expected={
        'nvidia-35': (('0000:84:00.0',), 'VGPU', None, 2, 1),
        'nvidia-36': ((), 'VGPU', None, 1, 0)}),
    # Where both are written the current name wins, as in oslo.config.
    'both names': Form(files=("""
        [devices]
        enabled_vgpu_types = nvidia-35
        enabled_mdev_types = nvidia-35, nvidia-36

        [vgpu_nvidia-35]
        device_addresses = 0000:85:00.0
        reserved = 3

        [mdev_nvidia-35]
        device_addresses = 0000:84:00.0
        reserved = 1
        """,), expected={
        'nvidia-35': (('0000:84:00.0',), 'VGPU', None, 1, 1),
        'nvidia-36': ((), 'VGPU', None, 1, 0)}),
    # kolla-ansible and openstack-ansible deploy nova.conf.d/ snippets:
    # read after the files, by name, later ones winning; not *.conf: never.
    'snippets in a directory': Form(files=("""
        [devices]
        enabled_mdev_types = nvidia-35

        [mdev_nvidia-35]
        reserved = 5
        """,), snippets=(
        ('10-vgpu.conf', """
            [devices]
            enabled_mdev_types = nvidia-35, nvidia-36

            [mdev_nvidia-35]
            device_addresses = 0000:84:00.0
            max_unit = 2
            """),
        ('20-reserved.conf', """
            [mdev_nvidia-35]
            reserved = 1

            [mdev_nvidia-36]
            max_instances = 2
            """),
        ('README', '[mdev_nvidia-36]\nmax_instances = not read\n')),
        expected={
            'nvidia-35': (('0000:84:00.0',), 'VGPU', None, 2, 1),
            'nvidia-36': ((), 'VGPU', 2, 1, 0)}),
    'two files': Form(files=("""
        [devices]
        enabled_mdev_types = nvidia-35
        [mdev_nvidia-35]
        max_unit = 2
        """, """
        [mdev_nvidia-35]
        max_unit = 3
        """), expected={'nvidia-35': ((), 'VGPU', None, 3, 0)}),
}


def write(form: Form, root: str) -> tuple[list[str], list[str]]:
    """The form's files under ``root``: (config files, config dirs)."""
    files = []
    for index, text in enumerate(form.files):
        path = os.path.join(root, 'nova-%d.conf' % index)
        with open(path, 'w') as f:
            f.write(textwrap.dedent(text))
        files.append(path)
    dirs = []
    if form.snippets:
        directory = os.path.join(root, 'nova.conf.d')
        os.mkdir(directory)
        for name, text in form.snippets:
            with open(os.path.join(directory, name), 'w') as f:
                f.write(textwrap.dedent(text))
        dirs.append(directory)
    return files, dirs


def summary(device_config) -> dict:
    """What a DeviceConfig says, in the form of :attr:`Form.expected`."""
    return {t.type_id: (t.device_addresses, t.mdev_class, t.max_instances,
                        t.max_unit, t.reserved)
            for t in device_config.types}
