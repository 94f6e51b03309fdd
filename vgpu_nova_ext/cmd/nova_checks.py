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
"""The Nova findings of ``vgpu-nova-ext check``: is the driver wired?"""

import importlib

from vgpu_nova_ext.conf import raw
from vgpu_nova_ext import findings

SHIM = 'nova.virt.vgpu_nova_ext_driver'
DRIVER = 'vgpu_nova_ext_driver.LibvirtVGPUDriver'


def check(config_files) -> list[findings.Finding]:
    """Nothing when no nova.conf is read (a simulated or dry run)."""
    if not config_files:
        return []
    problems = []
    configured = raw.option(config_files, 'DEFAULT', 'compute_driver')
    if configured != DRIVER:
        # Not wired (yet): say so; the rest only matters once it is.
        return [findings.Finding(
            findings.NOVA_COMPUTE_DRIVER, findings.WARNING,
            '[DEFAULT] compute_driver', configured or '(unset)',
            'nova-compute does not load the vgpu-nova-ext driver, so '
            'nothing on this host uses vgpu-nova-ext\'s devices and '
            'providers', 'set compute_driver = %s' % DRIVER)]
    try:
        importlib.import_module('nova')
    except ImportError:
        problems.append(findings.Finding(
            findings.NOVA_MISSING, findings.ERROR, 'environment', 'nova',
            'the nova package is not importable here',
            'install vgpu-nova-ext into nova-compute\'s own environment '
            '(nova is no namespace package: the driver shim must sit in '
            'the same site-packages as nova)'))
        return problems
    try:
        module = importlib.import_module(SHIM)
        getattr(module, 'LibvirtVGPUDriver')
    except Exception as exc:  # ImportError, or anything the import raised
        problems.append(findings.Finding(
            findings.NOVA_SHIM, findings.ERROR, 'module', SHIM,
            'Nova cannot import the driver as it will (%s: %s)' % (
                type(exc).__name__, exc),
            'install vgpu-nova-ext into the environment of nova-compute '
            '(pip install into the same virtualenv or site-packages)'))
        return problems
    from vgpu_nova_ext.nova import compat
    try:
        compat.check_nova()
    except Exception as exc:
        problems.append(findings.Finding(
            findings.NOVA_VERSION, findings.ERROR,
            'nova', compat.nova_version(),
            str(exc), 'use the vgpu-nova-ext release made for this Nova'))
    return problems
