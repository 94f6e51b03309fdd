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

# shellcheck source=tests/devstack/outside.sh
source "$HERE/outside.sh"
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
