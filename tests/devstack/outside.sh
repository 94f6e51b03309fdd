#!/bin/bash
# The world outside devstack, for the plugin's harnesses: sudo, the kernel's
# modules, the cloud. Sourced by harness.sh (devstack's helpers stubbed) and
# real_devstack.sh (devstack's own); ACTIONS names the log of what was done.

function record { echo "$*" >> "$ACTIONS"; }

function sudo {
    # Drop the ownership options of install; run the rest as is.
    if [[ "$1" == install ]]; then
        shift
        local args=()
        while [[ $# -gt 0 ]]; do
            case "$1" in -o|-g) shift 2 ;; *) args+=("$1"); shift ;; esac
        done
        install "${args[@]}"
    else
        "$@"
    fi
}

function lsmod {
    if [[ "${HARNESS_MTTY_LOADED:-1}" == 1 ]]; then
        echo "mtty 16384 0"
    fi
    echo "kvm 1163264 1"
}

function openstack {
    # As the real client: nothing without a cloud selected (devstack's
    # stack.sh has exported one before the extra phase).
    if [[ -z "${OS_CLOUD:-}${OS_AUTH_URL:-}" ]]; then
        echo "Missing value auth-url required for auth plugin password" >&2
        return 1
    fi
    record openstack "$@"
    # The GPU providers, once nova-compute has reported them.
    if [[ "$*" == *"resource provider list"* && \
          "${HARNESS_NO_VGPU:-0}" != 1 ]]; then
        echo 5a0c3f4e-2b1d-4e6f-9a8b-7c6d5e4f3a2b
    fi
}

# Package installs: recorded, not made.
function setup_develop { record setup_develop "$@"; }
function pip_install_gr { record pip_install_gr "$@"; }
