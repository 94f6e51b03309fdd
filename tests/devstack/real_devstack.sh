#!/bin/bash
# Runs devstack phases of the plugin on devstack's own function library:
# a devstack checkout's stackrc (with functions and functions-common),
# lib/keystone and lib/nova, and devstack's own plugin loading
# (load_plugin_settings, run_plugins), as stack.sh runs them. Only the
# world outside devstack is stubbed (outside.sh: sudo, lsmod, the cloud,
# package installs; here systemd too), and /etc is a directory of WORKDIR.
#   real_devstack.sh DEVSTACK_DIR WORKDIR PHASE...
set -eu
DEVSTACK=$(cd "$1" && pwd)
WORK=$2
shift 2
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
ACTIONS=$WORK/actions.log

TOP_DIR=$DEVSTACK
HOST_IP=127.0.0.1
SERVICE_HOST=127.0.0.1
# devstack's own files read unset variables.
set +u
# shellcheck source=/dev/null
source "$DEVSTACK/stackrc"
# Where stack.sh keeps its trees (stackrc says /opt/stack); the plugin's
# checkout is there, as devstack clones it.
DEST=$WORK/dest
DATA_DIR=$DEST/data
mkdir -p "$DATA_DIR"
ln -sfn "$TOP" "$DEST/vgpu-nova-ext"
if [[ -n "${HARNESS_ENABLED_SERVICES:-}" ]]; then
    ENABLED_SERVICES=$HARNESS_ENABLED_SERVICES
fi
# shellcheck source=/dev/null
source "$DEVSTACK/lib/keystone"
# shellcheck source=/dev/null
source "$DEVSTACK/lib/nova"
STACK_USER=$(id -un)
# /etc, and what stack.sh sets up before the plugin's phases run.
NOVA_CONF_DIR=$WORK/etc/nova
NOVA_CONF=$NOVA_CONF_DIR/nova.conf
NOVA_CPU_CONF=$NOVA_CONF_DIR/nova-cpu.conf
KEYSTONE_SERVICE_URI=http://127.0.0.1/identity
SERVICE_PASSWORD=secret
SERVICE_DOMAIN_NAME=Default
SERVICE_PROJECT_NAME=service
export OS_CLOUD=devstack-admin
mkdir -p "$NOVA_CONF_DIR"

# shellcheck source=tests/devstack/outside.sh
source "$HERE/outside.sh"
# systemd: devstack's run_process hands an enabled service to
# _run_under_systemd, stop_process asks $SYSTEMCTL.
function _run_under_systemd { record run_process "$1" "$2"; }
function fake_systemctl {
    case "$1" in
        is-enabled) return 0 ;;
        stop) local unit=${2#devstack@}; record stop_process "${unit%.service}" ;;
    esac
}
SYSTEMCTL=fake_systemctl
# What the plugin asks of devstack, recorded on the way to devstack's own.
eval "$(declare -f enable_service | sed '1s/enable_service/_devstack_enable_service/')"
function enable_service { record enable_service "$@"; _devstack_enable_service "$@"; }
function define_plugin { record define_plugin "$@"; }
function plugin_requires { record plugin_requires "$@"; }
# devstack's die waits a second for buffers; not here.
function sleep { :; }

# As local.conf's enable_plugin, with the checkout already in place.
enable_plugin vgpu-nova-ext "file://$TOP"
load_plugin_settings >/dev/null
for phase in "$@"; do
    case "$phase" in
        install|post-config|extra) run_plugins stack "$phase" ;;
        # devstack's start_nova_compute copies nova.conf over nova-cpu.conf
        start-compute) cp "$NOVA_CONF" "$NOVA_CPU_CONF" ;;
        unstack|clean) run_plugins "$phase" ;;
        *) echo "unknown phase $phase" >&2; exit 2 ;;
    esac
done
