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
"""Licensing for guests that run NVIDIA's GPU Operator.

In a Kubernetes worker VM managed by the GPU Operator, the vGPU guest
driver runs in the Operator's driver container, which does not read the
guest's ``/etc/nvidia``: it mounts ``gridd.conf`` and
``client_configuration_token.tok`` from a Secret in the Operator's
namespace (ClusterPolicy ``spec.driver.licensingConfig.secretName``, the
Helm value ``driver.licensingConfig.secretName``; ``configMapName`` is
deprecated in favour of it), the token only when
``licensingConfig.nlsEnabled`` is true (NVIDIA/gpu-operator at a22dbf6:
``internal/consts/consts.go``, ``applyLicensingConfig`` in
``controllers/object_controls.go``, ``deployments/gpu-operator/
values.yaml``).

So such a guest receives, besides the usual files, that Secret as a
manifest (:data:`MANIFEST_PATH`, mode 0600), which its cluster applies
(``kubectl apply -f``, or a k3s/RKE2 server's auto-deploy manifests
directory). A tenant asks for it with the instance metadata key
:data:`METADATA_KEY`.
"""

import base64
import re

import yaml

from vgpu_nova_ext.vendors import nvidia_licensing
from vgpu_nova_ext.vendors import types as vendor_types

#: The instance metadata key a tenant sets: the Operator's namespace, or
#: ``true`` for :data:`DEFAULT_NAMESPACE`.
METADATA_KEY = 'vgpu_nova_ext:gpu_operator'
#: Where Helm installs the Operator in NVIDIA's guide.
DEFAULT_NAMESPACE = 'gpu-operator'
#: The name NVIDIA's guide gives the licensing object.
SECRET_NAME = 'licensing-config'
#: The keys the driver container mounts (the Operator's constants).
GRIDD_KEY = 'gridd.conf'
TOKEN_KEY = 'client_configuration_token.tok'
#: Where the guest finds the manifest; root's only, it holds the token.
MANIFEST_PATH = '/etc/nvidia/gpu-operator/licensing-config.yaml'
MANIFEST_MODE = 0o600
#: A Kubernetes namespace name: an RFC 1123 DNS label.
_DNS_LABEL = re.compile(r'[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?')
_ON = ('true', 'yes', '1', 'on')
_OFF = ('', 'false', 'no', '0', 'off')
_KEYS = {
    nvidia_licensing.GRIDD_CONF: GRIDD_KEY,
    '%s/%s' % (nvidia_licensing.TOKEN_DIR, nvidia_licensing.TOKEN_NAME):
        TOKEN_KEY,
}


class BadNamespace(vendor_types.GuestRequestError):
    """The metadata names no namespace Kubernetes accepts."""


def requested_namespace(metadata) -> str | None:
    """The namespace the instance's metadata asks for; None: not asked.

    :raises BadNamespace: naming the key, the value and what is allowed
        (the value is the tenant's: it is checked, never trusted).
    """
    if not isinstance(metadata, dict) or METADATA_KEY not in metadata:
        return None
    value = metadata[METADATA_KEY]
    text = value.strip() if isinstance(value, str) else None
    if text is not None and text.lower() in _OFF:
        return None
    if text is not None and text.lower() in _ON:
        return DEFAULT_NAMESPACE
    if text is None or not _DNS_LABEL.fullmatch(text):
        raise BadNamespace(
            'instance metadata %s = %r: give the GPU Operator\'s namespace '
            '(lower-case letters, digits and "-", at most 63, as Kubernetes '
            'names it) or "true" for %s' % (
                METADATA_KEY, str(value)[:80], DEFAULT_NAMESPACE))
    return text


def secret(found: vendor_types.GuestLicensing, namespace: str,
           reveal: bool = True) -> dict:
    """The Secret the driver container mounts, as a Kubernetes object.

    :param reveal: False: the token's value is its fingerprint (for
        showing; such a manifest is not applied).
    """
    data = {}
    for guest_file in found.files:
        key = _KEYS.get(guest_file.path)
        if key is None:
            continue
        if not reveal and isinstance(guest_file.content,
                                     vendor_types.Secret):
            data[key] = '<the client configuration token, %s>' % (
                guest_file.content.fingerprint)
        else:
            data[key] = base64.b64encode(guest_file.data()).decode()
    return {
        'apiVersion': 'v1',
        'kind': 'Secret',
        'metadata': {
            'name': SECRET_NAME,
            'namespace': namespace,
            'labels': {'app.kubernetes.io/managed-by': 'vgpu-nova-ext'},
        },
        'type': 'Opaque',
        'data': data,
    }


def helm_values(found: vendor_types.GuestLicensing) -> dict:
    """The Operator's values that make its driver container mount it."""
    return {'driver': {'licensingConfig': {
        'secretName': SECRET_NAME,
        'nlsEnabled': any(_KEYS.get(f.path) == TOKEN_KEY
                          for f in found.files)}}}


def manifest(found: vendor_types.GuestLicensing, namespace: str,
             reveal: bool = True) -> str:
    """The manifest file: the Secret, with how to use it in comments."""
    values = helm_values(found)['driver']['licensingConfig']
    header = (
        '# The vGPU licensing of this guest for NVIDIA\'s GPU Operator,\n'
        '# written by vgpu-nova-ext. Apply it (kubectl apply -f this file)\n'
        '# and install the Operator with the Helm values\n'
        '#   driver.licensingConfig.secretName=%s\n'
        '#   driver.licensingConfig.nlsEnabled=%s\n' % (
            values['secretName'], str(values['nlsEnabled']).lower()))
    return header + yaml.safe_dump(secret(found, namespace, reveal),
                                   sort_keys=False)


def guest_file(found: vendor_types.GuestLicensing,
               namespace: str) -> vendor_types.GuestFile:
    """The manifest as a guest file; its content is a Secret (the token)."""
    return vendor_types.GuestFile(
        MANIFEST_PATH,
        vendor_types.Secret(manifest(found, namespace).encode(),
                            shown=manifest(found, namespace, reveal=False)),
        MANIFEST_MODE)
