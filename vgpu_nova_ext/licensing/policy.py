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
"""Who may call the vendordata service: oslo.policy rules.

The answer holds the NLS client configuration token, which a tenant must
never read: by default only Nova's service identity (the
``[vendordata_dynamic_auth]`` user, which holds the ``service`` role, as
Nova's own service-to-service policies expect) or an administrator may ask.
An operator overrides the rule in the policy file named by
``[vgpu_vendordata] policy_file``; ``oslopolicy-sample-generator
--namespace vgpu_nova_ext`` writes its sample.
"""

from oslo_config import cfg
from oslo_context import context as oslo_context
from oslo_policy import policy

from vgpu_nova_ext.conf import vendordata as vendordata_conf

VENDORDATA_SHOW = 'vgpu_nova_ext:vendordata:show'
SERVICE_OR_ADMIN = 'role:service or role:admin'

rules = [
    policy.DocumentedRuleDefault(
        name=VENDORDATA_SHOW,
        check_str=SERVICE_OR_ADMIN,
        description='Read the licensing configuration of an instance that '
                    'holds a vGPU (it carries the NVIDIA License System '
                    'client configuration token). Nova\'s DynamicJSON '
                    'vendordata provider asks with the token of the '
                    '[vendordata_dynamic_auth] user of nova.conf: give that '
                    'user the service role. No project member should match '
                    'this rule.',
        operations=[{'path': '/', 'method': 'POST'}],
        scope_types=['project']),
]


def list_rules():
    """For ``oslopolicy-sample-generator`` (oslo.policy.policies)."""
    return rules


def enforcer(conf: cfg.ConfigOpts) -> policy.Enforcer:
    """An enforcer of :data:`rules`, overridden by the operator's file."""
    found = policy.Enforcer(
        conf, policy_file=conf[vendordata_conf.GROUP].policy_file)
    found.register_defaults(rules)
    return found


def authorized(found: policy.Enforcer, environ: dict) -> bool:
    """Whether the caller keystonemiddleware identified may ask."""
    context = oslo_context.RequestContext.from_environ(environ)
    return found.authorize(VENDORDATA_SHOW, {'project_id': context.project_id},
                           context, do_raise=False)
