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
"""``[vgpu_vendordata]``: the DynamicJSON vendordata service."""

from oslo_config import cfg

from vgpu_nova_ext.conf import loader

GROUP = 'vgpu_vendordata'

vendordata_group = cfg.OptGroup(
    name=GROUP, title='vGPU licensing vendordata service',
    help='The service Nova\'s DynamicJSON vendordata provider calls (nova.'
         'conf: [api] vendordata_providers = StaticJSON,DynamicJSON and '
         'vendordata_dynamic_targets = cloud-init@http://<listen>:<port>/). '
         'It answers with the licensing cloud-config for instances whose '
         'Placement allocations hold a vGPU, and with nothing otherwise.')

vendordata_opts = [
    cfg.HostAddressOpt(
        'listen', default='127.0.0.1',
        help='Address the development server (vgpu-nova-ext-vendordata) '
             'listens on. Production runs '
             'vgpu_nova_ext.licensing.vendordata:init_application under a '
             'WSGI server, which ignores this. Either way every request '
             'must carry a valid Keystone token (keystonemiddleware, '
             'configured in [keystone_authtoken]) of a caller the policy '
             'allows; give Nova [vendordata_dynamic_auth] credentials of a '
             'user with the service role. Only the development server on a '
             'loopback address, started with --noauth, serves without.'),
    cfg.PortOpt(
        'port', default=9876,
        help='Port the development server listens on (the port of the '
             'vendordata_dynamic_targets URL in nova.conf).'),
    cfg.StrOpt(
        'policy_file', default='vgpu-nova-ext-policy.yaml',
        help='The policy file of the vendordata service (oslo.policy; '
             'looked up beside nova.conf when relative). Unset rules keep '
             'their defaults: only the service role or an administrator '
             'may read an instance\'s licensing configuration. '
             '``oslopolicy-sample-generator --namespace vgpu_nova_ext`` '
             'writes a sample.'),
    cfg.FloatOpt(
        'placement_timeout', default=4.0, min=0.1,
        help='Seconds the service waits for Placement while answering one '
             'guest, in all (a read that takes longer is not tried again; '
             'the answer is then 503). Keep it below Nova\'s [api] '
             'vendordata_dynamic_read_timeout (5 s by default): past that '
             'Nova stops waiting, and the guest gets no licensing '
             'configuration whatever this service answers later. Replaces '
             '[placement] timeout for this service.'),
    cfg.IntOpt(
        'max_body_bytes', default=262144, min=1024,
        help='Largest request body accepted; Nova sends the instance\'s '
             'user data in it (at most 64 KiB, base64).'),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    loader.register_group(conf, vendordata_group)
    conf.register_opts(vendordata_opts, group=vendordata_group)


def list_opts():
    return [(vendordata_group, vendordata_opts)]
