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
"""What is particular to a GPU vendor, behind one small plugin interface.

The core never parses a vendor's type names itself: it asks the vendor
plugin (stevedore namespace ``vgpu_nova_ext.vendors``) that claims the type.
"""

import abc
import dataclasses
import threading

from stevedore import extension

from vgpu_nova_ext.vendors import types as vendor_types

NAMESPACE = 'vgpu_nova_ext.vendors'


@dataclasses.dataclass(frozen=True)
class TypeInfo:
    """What a vendor plugin knows of one vGPU type."""

    short_name: str
    """The name without the vendor's prefix (``M60-2Q``): trait base."""
    series: str | None = None
    """The vendor's series or profile class (``Q``, ``B``, ``A``, ``C``)."""
    framebuffer_mb: int | None = None
    max_per_gpu: int | None = None
    """Most devices of the type on one GPU, where the vendor says so.

    NVIDIA says it in ``max_instance=`` of the type's ``description``.
    """
    board: str | None = None
    """The board the type belongs to (``M60``, ``A40``), where known."""
    max_per_vm: int | None = None
    """Most devices of the type one guest may hold, where the driver says
    so (NVML's max instances per VM); set by the core, not the plugin."""
    gpu_instance_profile: str | None = None
    """A MIG-backed type's GPU instance profile (``1g.18gb``); None for a
    time-sliced type."""
    max_per_gi: int | None = None
    """A MIG-backed type's most vGPUs on one GPU instance."""
    max_per_gpu_mixed: int | None = None
    """Most devices of the type on one GPU in a mode that lets sizes mix
    (NVIDIA's mixed-size mode), where the vendor says so; never more than
    ``max_per_gpu``."""
    vendor: str | None = None
    """The plugin that described it (set by :class:`Vendors`)."""


class VendorPlugin(abc.ABC):
    """One GPU vendor's knowledge."""

    #: Lower runs first; the generic plugin, which claims everything, last.
    priority = 50
    #: The plugin's name, as in [vgpu_licensing] vendor.
    name = ''

    @abc.abstractmethod
    def claims(self, type_id: str, vendor_id: str | None) -> bool:
        """Whether this plugin speaks for type ``type_id``.

        ``vendor_id`` is the PCI vendor of the device offering it (None
        for virtual devices).
        """

    @abc.abstractmethod
    def describe_type(self, type_id: str, name: str | None,
                      description: str | None) -> TypeInfo:
        """What the type's sysfs ``name`` and ``description`` say."""

    def combination_problem(self, vgpus: list[TypeInfo]) -> str | None:
        """Why one guest may not hold these vGPUs together, or None.

        ``vgpus`` has one entry per vGPU the guest asks for. The vendor's
        rules for several vGPUs in one VM live here, never in the core.
        """
        return None

    #: The plugin parameters a flavor may set on the vendor's vGPUs
    #: (``vgpu_nova_ext:vgpu_params:<name>``): {name: allowed values}.
    vgpu_params: dict[str, tuple[str, ...]] = {}

    def vgpu_params_problem(self, info: TypeInfo,
                            params: tuple[tuple[str, str], ...]
                            ) -> str | None:
        """Why ``params`` do not apply to a vGPU of ``info``, or None.

        Names and values are checked against :attr:`vgpu_params` before;
        here the vendor's rules by board and series.
        """
        if params:
            return ('%s vGPUs take no plugin parameters' % (
                self.name or 'these'))
        return None

    def guest_licensing(self, settings, type_id: str | None, os_type: str):
        """The files (and commands) a guest needs to be licensed.

        :returns: a :class:`vgpu_nova_ext.vendors.types.GuestLicensing`.
        """
        return vendor_types.GuestLicensing(files=())

    def operator_licensing(self, found, metadata):
        """A file for a cluster operator in the guest, as it asks.

        :param found: what :meth:`guest_licensing` gave this guest.
        :param metadata: the instance's metadata (the tenant's: checked,
            never trusted).
        :returns: a :class:`~vgpu_nova_ext.vendors.types.GuestFile`, or
            None where the instance asks for none or the vendor has none.
        :raises GuestRequestError: the metadata asks for something wrong.
        """
        return None


class Vendors:
    """The installed vendor plugins, asked in priority order."""

    def __init__(self, plugins: list[VendorPlugin] | None = None) -> None:
        if plugins is None:
            mgr = extension.ExtensionManager(NAMESPACE, invoke_on_load=True)
            plugins = [ext.obj for ext in mgr]
        self.plugins = sorted(plugins, key=lambda p: p.priority)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.plugins]

    def by_name(self, name: str) -> VendorPlugin:
        for plugin in self.plugins:
            if plugin.name == name:
                return plugin
        raise LookupError('no vendor plugin named %r (installed: %s)' % (
            name, ', '.join(p.name for p in self.plugins)))

    def for_type(self, type_id: str, vendor_id: str | None) -> VendorPlugin:
        for plugin in self.plugins:
            if plugin.claims(type_id, vendor_id):
                return plugin
        raise LookupError('no vendor plugin claims type %s' % type_id)

    def describe_type(self, type_id: str, vendor_id: str | None,
                      name: str | None, description: str | None) -> TypeInfo:
        plugin = self.for_type(type_id, vendor_id)
        return dataclasses.replace(
            plugin.describe_type(type_id, name, description),
            vendor=plugin.name)

    def describe_on(self, gpu, type_id: str) -> TypeInfo:
        """A type as the plugin names it and ``gpu``'s driver says it.

        What the driver says (NVML, on a :class:`model.PhysicalGPU`) wins
        over what the plugin reads from the name: the most per VM, and a
        MIG-backed type's GPU instance profile and most per instance.
        """
        info = self.describe_type(
            type_id, gpu.vendor_id, gpu.type_name(type_id),
            gpu.type_description(type_id))
        per_vm = gpu.type_max_per_vm(type_id)
        profile, per_gi = gpu.type_mig(type_id)
        return dataclasses.replace(
            info,
            max_per_vm=per_vm if per_vm is not None else info.max_per_vm,
            gpu_instance_profile=profile or info.gpu_instance_profile,
            max_per_gi=per_gi or info.max_per_gi)

    def vgpu_param_values(self) -> dict[str, tuple[str, ...]]:
        """Every plugin's parameters: {name: allowed values} (merged)."""
        found: dict[str, set[str]] = {}
        for plugin in self.plugins:
            for name, values in plugin.vgpu_params.items():
                found.setdefault(name, set()).update(values)
        return {name: tuple(sorted(v)) for name, v in sorted(found.items())}

    def combination_problem(self, vgpus: list[TypeInfo]) -> str | None:
        """Why one guest may not hold these vGPUs together, or None."""
        if len(vgpus) < 2:
            return None
        vendors = sorted({v.vendor or '?' for v in vgpus})
        if len(vendors) > 1:
            return ('one guest cannot hold vGPUs of different vendors (%s)'
                    % ', '.join(vendors))
        for info in vgpus:
            asked = sum(1 for v in vgpus if v.short_name == info.short_name)
            if info.max_per_vm is not None and asked > info.max_per_vm:
                return ('the driver allows at most %d vGPU(s) of %s in one '
                        'VM; asked: %d' % (info.max_per_vm, info.short_name,
                                           asked))
        return self.by_name(vendors[0]).combination_problem(vgpus)


_LOADED: Vendors | None = None
_LOADED_LOCK = threading.Lock()


def loaded() -> Vendors:
    """The installed plugins, found once per process.

    A stevedore scan of the installed packages' entry points: the planner,
    the allocator, the MIG planner and licensing share one.
    """
    global _LOADED
    with _LOADED_LOCK:
        if _LOADED is None:
            _LOADED = Vendors()
        return _LOADED
