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
"""What the planner, ``check``, the audits and the MIG planner find.

One record, :class:`Finding`, and every code it can carry, each a named
constant here (as Placement keeps its error codes in one module). A code
is ``<area>.<what>``; it is part of the interface (operators grep logs and
``check`` output for it), so a code is never reused for another meaning.
The operator guide's "Finding codes" table lists them all: a test keeps
the two alike.
"""

import dataclasses
import enum


class Severity(enum.StrEnum):
    ERROR = 'error'
    """The service cannot do what the configuration asks: fix it first."""
    WARNING = 'warning'
    """It works, but not as the operator may think."""


ERROR = Severity.ERROR
WARNING = Severity.WARNING


@dataclasses.dataclass(frozen=True)
class Finding:
    code: str
    """One of this module's constants."""
    severity: Severity
    where: str
    """Where the operator acts: ``[mdev_nvidia-35] device_addresses``, a
    host thing (``host GPU 0000:84:00.0``), a consumer or a device."""
    value: str
    why: str
    fix: str

    def __str__(self) -> str:
        return '%s = %s: %s. Fix: %s' % (self.where, self.value, self.why,
                                         self.fix)


# -- [devices] enabled types and their groups (the planner) ---------------
TYPE_NOT_OFFERED = 'type.not_offered'
TYPE_OLD_GROUP_IGNORED = 'type.old_group_ignored'
TYPE_DUPLICATE = 'type.duplicate'
TYPE_NONE_ENABLED = 'type.none_enabled'
TYPE_SECOND_DEFAULT = 'type.second_default'
TYPE_NAME_UNKNOWN = 'type.name_unknown'
TYPE_MAX_UNIT_RULE = 'type.max_unit_rule'
TYPE_MAX_INSTANCES_EXCEEDED = 'type.max_instances_exceeded'

# -- device_addresses (the planner) ---------------------------------------
ADDRESS_MALFORMED = 'address.malformed'
ADDRESS_ABSENT = 'address.absent'
ADDRESS_TYPE_UNSUPPORTED = 'address.type_unsupported'
ADDRESS_TWO_TYPES = 'address.two_types'

# -- a physical GPU as the host shows it (the planner, the vendor) --------
GPU_DEFAULT_UNSUPPORTED = 'gpu.default_unsupported'
GPU_SRIOV_DISABLED = 'gpu.sriov_disabled'
GPU_NO_MDEV = 'gpu.no_mdev'
GPU_FOREIGN_DEVICES = 'gpu.foreign_devices'
GPU_MIXED_SIZE = 'gpu.mixed_size'
GPU_CAPACITY_BEYOND_TABLE = 'gpu.capacity_beyond_table'
GPU_BRING_UP_FAILED = 'gpu.bring_up_failed'
GPU_SCHEDULER_PENDING = 'gpu.scheduler_pending'
GPU_SCHEDULER_UNKNOWN = 'gpu.scheduler_unknown'
GPU_SCHEDULER_FAILED = 'gpu.scheduler_failed'
GPU_SCHEDULER_CONFLICT = 'gpu.scheduler_conflict'

# -- MIG layouts (the MIG planner) ----------------------------------------
MIG_NOT_CAPABLE = 'mig.not_capable'
MIG_VF_ADDRESS = 'mig.vf_address'
MIG_TWO_LAYOUTS = 'mig.two_layouts'
MIG_LAYOUT_DOES_NOT_FIT = 'mig.layout_does_not_fit'
MIG_LAYOUT_WITHOUT_TYPE_PROFILE = 'mig.layout_without_type_profile'
MIG_LAYOUT_IN_USE = 'mig.layout_in_use'
MIG_OTHER_PROFILES = 'mig.other_profiles'

# -- the service's state directory and ledger (check) ---------------------
STATE_LEDGER = 'state.ledger'
STATE_MISSING = 'state.missing'
STATE_NOT_DIR = 'state.not_dir'
STATE_UNREADABLE = 'state.unreadable'
STATE_READ_ONLY = 'state.read_only'
STATE_WRITABLE = 'state.writable'
STATE_OWNER = 'state.owner'
STATE_MODE = 'state.mode'
PRIVSEP_START = 'privsep.start'

# -- licensing (check) ----------------------------------------------------
LICENSING_CONFIG = 'licensing.config'
LICENSING_NO_DELIVERY = 'licensing.no_delivery'
LICENSING_TOKEN_UNREADABLE = 'licensing.token_unreadable'
LICENSING_TOKEN_READABLE = 'licensing.token_readable'

# -- Nova itself (check) --------------------------------------------------
NOVA_MISSING = 'nova.missing'
NOVA_VERSION = 'nova.version'
NOVA_COMPUTE_DRIVER = 'nova.compute_driver'
NOVA_SHIM = 'nova.shim'

# -- Placement against the plan (audit) -----------------------------------
PROVIDER_MISSING = 'provider.missing'
PROVIDER_UNEXPECTED = 'provider.unexpected'
PROVIDER_INVENTORY = 'provider.inventory'
PROVIDER_TRAITS = 'provider.traits'
PROVIDER_PARENT = 'provider.parent'

# -- who holds which vGPU (audit --ownership) -----------------------------
OWNER_ALLOCATION_WITHOUT_DEVICE = 'owner.allocation_without_device'
OWNER_DEVICE_WITHOUT_ALLOCATION = 'owner.device_without_allocation'
OWNER_DEVICE_ON_OTHER_GPU = 'owner.device_on_other_gpu'
OWNER_DEVICE_MISSING = 'owner.device_missing'
OWNER_GUEST_DEVICE_NOT_ITS_OWN = 'owner.guest_device_not_its_own'
OWNER_GUEST_DEVICE_UNKNOWN = 'owner.guest_device_unknown'
OWNER_MANAGER_VGPU_UNKNOWN = 'owner.manager_vgpu_unknown'


def codes() -> dict[str, str]:
    """{constant name: code} of every code above."""
    return {name: value for name, value in globals().items()
            if name.isupper() and isinstance(value, str)
            and name not in ('ERROR', 'WARNING') and '.' in value}
