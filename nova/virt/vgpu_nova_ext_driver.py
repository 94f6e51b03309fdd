# Installed by vgpu-nova-ext. Nova loads compute drivers from under nova.virt
# only: this module lets nova.conf say
#     [DEFAULT] compute_driver = vgpu_nova_ext_driver.LibvirtVGPUDriver
from vgpu_nova_ext.nova.driver import LibvirtVGPUDriver  # noqa: F401
