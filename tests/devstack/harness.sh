#!/bin/bash
# Runs devstack phases of the plugin with devstack's helpers stubbed.
#   harness.sh WORKDIR PHASE...   (PHASE: install post-config start-compute
#                                   extra unstack clean)
set -eu
WORK=$1
shift
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)

export DEST=$WORK/dest DATA_DIR=$WORK/data STACK_USER
export NOVA_CONF_DIR=$WORK/etc/nova
export NOVA_CONF=$NOVA_CONF_DIR/nova.conf NOVA_CPU_CONF=$NOVA_CONF_DIR/nova-cpu.conf
export VGPU_NOVA_EXT_DIR=$TOP
# What devstack's lib/keystone sets for the service users.
export KEYSTONE_SERVICE_URI=http://127.0.0.1/identity SERVICE_PASSWORD=secret
export SERVICE_DOMAIN_NAME=Default SERVICE_PROJECT_NAME=service
# What stack.sh has exported before the extra phase (devstack's admin).
export OS_CLOUD=devstack-admin
STACK_USER=$(id -un)
ACTIONS=$WORK/actions.log
mkdir -p "$NOVA_CONF_DIR" "$DATA_DIR"

function record { echo "$*" >> "$ACTIONS"; }
function define_plugin { record define_plugin "$@"; }
function plugin_requires { record plugin_requires "$@"; }
function trueorfalse {
    local default=$1 value=${!2:-}
    case "$value" in
        [Tt]rue|1|yes|Yes) echo True ;;
        [Ff]alse|0|no|No) echo False ;;
        *) echo "$default" ;;
    esac
}
function get_python_exec_prefix { echo /usr/local/bin; }
function get_rootwrap_location { echo "/usr/local/bin/$1-rootwrap"; }
function setup_develop { record setup_develop "$@"; }
function pip_install_gr { record pip_install_gr "$@"; }
function install_package { record install_package "$@"; }
# As devstack's: ENABLED_SERVICES (a single node's by default) decides
# what runs and what is configured.
ENABLED_SERVICES=${HARNESS_ENABLED_SERVICES:-key,g-api,placement-api,n-api,n-api-meta,n-cond,n-sch,n-cpu}
function is_service_enabled {
    local service
    for service in "$@"; do
        [[ ",$ENABLED_SERVICES," == *",$service,"* ]] && return 0
    done
    return 1
}
function enable_service {
    is_service_enabled "$1" || ENABLED_SERVICES+=",$1"
    record enable_service "$1"
}
function iniset { python3 "$HERE/ini.py" set "$@"; record iniset "$@"; }
function inidelete { python3 "$HERE/ini.py" delete "$@"; record inidelete "$@"; }
function echo_summary { :; }
function die { shift; record die "$@"; echo "die: $*" >&2; exit 1; }
function lsmod {
    if [[ "${HARNESS_MTTY_LOADED:-1}" == 1 ]]; then
        echo "mtty 16384 0"
    fi
    echo "kvm 1163264 1"
}
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
function openstack {
    # As the real client: nothing without a cloud selected (devstack's
    # stack.sh has sourced openrc's credentials before the extra phase).
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
# As devstack's: a service that is not enabled is neither started nor
# stopped.
function run_process {
    is_service_enabled "$1" || return 0
    record run_process "$@"
}
function stop_process {
    is_service_enabled "$1" || return 0
    record stop_process "$@"
}

# shellcheck source=devstack/settings
source "$TOP/devstack/settings"
for phase in "$@"; do
    case "$phase" in
        install) source "$TOP/devstack/plugin.sh" stack install ;;
        post-config) source "$TOP/devstack/plugin.sh" stack post-config ;;
        # devstack's start_nova_compute copies nova.conf over nova-cpu.conf
        start-compute) cp "$NOVA_CONF" "$NOVA_CPU_CONF" ;;
        extra) source "$TOP/devstack/plugin.sh" stack extra ;;
        unstack) source "$TOP/devstack/plugin.sh" unstack ;;
        clean) source "$TOP/devstack/plugin.sh" clean ;;
        *) echo "unknown phase $phase" >&2; exit 2 ;;
    esac
done
