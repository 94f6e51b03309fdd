#!/bin/bash
# devstack plugin of vgpu-nova-ext: NVIDIA vGPU for Nova (mtty without GPU).

# shellcheck source=devstack/lib/vgpu-nova-ext
source "$VGPU_NOVA_EXT_DIR/devstack/lib/vgpu-nova-ext"

if [[ "$1" == "stack" && "$2" == "install" ]]; then
    echo_summary "Installing vgpu-nova-ext"
    install_vgpu_nova_ext
elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
    echo_summary "Configuring vgpu-nova-ext"
    configure_vgpu_nova_ext
elif [[ "$1" == "stack" && "$2" == "extra" ]]; then
    echo_summary "Starting vgpu-nova-ext"
    start_vgpu_nova_ext
    create_vgpu_nova_ext_flavors
    wait_for_vgpu_nova_ext_inventory
fi

if [[ "$1" == "unstack" ]]; then
    stop_vgpu_nova_ext
fi

if [[ "$1" == "clean" ]]; then
    cleanup_vgpu_nova_ext
fi
