#!/bin/bash
# The gate job's check, run on the devstack node after stacking: a server
# with the vGPU flavor comes up with its device, its Placement allocation
# and its licensing files, and its device is freed on delete.
set -euxo pipefail

DEVSTACK_DIR=${DEVSTACK_DIR:-/opt/stack/devstack}
# devstack's global virtualenv (GLOBAL_VENV, the default) holds the
# openstack client and vgpu-nova-ext; older layouts put them on PATH.
DEVSTACK_VENV=${DEVSTACK_VENV:-/opt/stack/data/venv}
if [[ -d "$DEVSTACK_VENV/bin" ]]; then
    PATH=$DEVSTACK_VENV/bin:$PATH
fi
# The cloud first: every openstack call below needs its credentials.
# openrc reads unset variables (not under set -u) and sets OS_PASSWORD
# (not under xtrace, which would print it in the job's log).
set +ux
# shellcheck source=/dev/null
source "$DEVSTACK_DIR/openrc" admin admin
set -ux
FLAVOR=${VGPU_NOVA_EXT_FLAVOR:-vgpu.small}
IMAGE=${IMAGE:-$(openstack image list -f value -c Name | grep -m1 cirros)}
STATE=${VGPU_NOVA_EXT_STATE_PATH:-/opt/stack/data/vgpu-nova-ext}
HOST=$(hostname)
MDEV_DEVICES=${MDEV_DEVICES:-/sys/bus/mdev/devices}
NOVA_CONF=${NOVA_CONF:-/etc/nova/nova.conf}
NOVA_CPU_CONF=${NOVA_CPU_CONF:-/etc/nova/nova-cpu.conf}
# nova-api-meta, which Neutron's metadata proxy calls for the guests.
METADATA_URL=${VGPU_NOVA_EXT_METADATA_URL:-http://127.0.0.1:8775}

# ini FILE SECTION OPTION: a value of a nova.conf (empty if unset).
function ini {
    python3 -c 'import configparser, sys
p = configparser.RawConfigParser()
p.read(sys.argv[1])
print(p.get(sys.argv[2], sys.argv[3], fallback=""))' "$@"
}
BACKEND=$(ini "$NOVA_CPU_CONF" vgpu_nova_ext host_backend)

# sign INSTANCE: X-Instance-ID-Signature, as Neutron's metadata proxy makes
# it (HMAC-SHA256 with $NOVA_CONF's [neutron] metadata_proxy_shared_secret).
function sign {
    python3 -c 'import configparser, hashlib, hmac, sys
p = configparser.RawConfigParser()
p.read(sys.argv[1])
secret = p.get("neutron", "metadata_proxy_shared_secret")
print(hmac.new(secret.encode(), sys.argv[2].encode(),
               hashlib.sha256).hexdigest())' "$NOVA_CONF" "$1"
}

openstack server create --flavor "$FLAVOR" --image "$IMAGE" \
    --network private --config-drive True --wait vgpu-check
server=$(openstack server show vgpu-check -f value -c id)
test "$(openstack server show vgpu-check -f value -c status)" = ACTIVE

# Placement: the vGPU is allocated on a GPU provider, a child of this
# compute node's provider (not the node itself).
gpu_rp=$(openstack resource provider allocation show "$server" -f json \
    | python3 -c 'import json, sys; a = json.load(sys.stdin); \
print([r["resource_provider"] for r in a if r["resources"].get("VGPU")][0])')
parent=$(openstack resource provider show "$gpu_rp" -f value \
    -c parent_provider_uuid)
# (Each check on a line of its own: set -e ignores all but the last
# command of an && list.)
test -n "$parent"
test "$parent" != None
node=$(openstack resource provider show "$parent" -f value -c name)
gpu_name=$(openstack resource provider show "$gpu_rp" -f value -c name)
[[ "$gpu_name" == "${node}_"* ]]

# The host: a device owned by the server, in its domain XML.
device=$(vgpu-nova-ext --config-file /etc/nova/nova-cpu.conf \
    --state-path "$STATE" --host "$HOST" devices --format json \
    | python3 -c "import json, sys; d = json.load(sys.stdin)['devices']; \
print([x['device'] for x in d if x['owner'] == '$server'][0])")
domain=$(openstack server show vgpu-check -f value \
    -c OS-EXT-SRV-ATTR:instance_name)
# Not "| grep -q": with pipefail, virsh killed by SIGPIPE would fail it.
[[ "$(sudo virsh dumpxml "$domain")" == *"$device"* ]]
test -e "$MDEV_DEVICES/$device"

# The config drive carries the licensing files: Nova lists them in the
# metadata's "files", their contents under openstack/content/.
drive=$(sudo virsh domblklist "$domain" | awk '/disk.config/ {print $2}')
sudo isoinfo -R -i "$drive" -x /openstack/latest/meta_data.json \
    | python3 -c 'import json, sys; m = json.load(sys.stdin); \
paths = {f["path"] for f in m.get("files", [])}; \
assert "/etc/nvidia/gridd.conf" in paths, paths'

# The licensing through the metadata API, as the guest's cloud-init reads
# it: nova-api-meta asks the vendordata service, which answers with the
# cloud-config that writes the token (where the plugin wired the service:
# VGPU_NOVA_EXT_VENDORDATA). The request is signed as Neutron's metadata
# proxy signs it; neither the secret nor the signature is traced.
if [[ -n "$(ini "$NOVA_CONF" api vendordata_dynamic_targets)" ]]; then
    project=$(openstack server show vgpu-check -f value -c project_id)
    set +x
    signature=$(sign "$server")
    vendor=$(curl -sf --max-time 60 -H "X-Instance-ID: $server" \
        -H "X-Tenant-ID: $project" -H "X-Instance-ID-Signature: $signature" \
        -H "X-Forwarded-For: 10.0.0.2" \
        "$METADATA_URL/openstack/latest/vendor_data2.json")
    set -x
    if [[ "$vendor" != *client_configuration_token.tok* ]]; then
        echo "the guest's vendor_data2.json has no licensing cloud-config:" \
            "see the vgpu-nova-ext-vendordata service's log" >&2
        exit 1
    fi
fi

# Placement, the ledger and the domains agree.
vgpu-nova-ext --config-file "$NOVA_CPU_CONF" --state-path "$STATE" \
    --host "$HOST" audit --ownership

# With the sysfs backend, nova-compute made the device through its privsep
# daemon, started through nova-rootwrap and running as root.
if [[ "$BACKEND" == sysfs ]]; then
    daemons=$(ps -eo user:32,args | \
        awk '/privsep-helper/ && /vgpu_nova_ext.host.privsep.vgpu_pctxt/ \
             && !/awk/ {print $1}' | sort -u)
    if [[ "$daemons" != root ]]; then
        echo "no privsep daemon of vgpu-nova-ext running as root" \
            "(found: ${daemons:-none})" >&2
        exit 1
    fi
fi

openstack server delete --wait vgpu-check
devices=$(vgpu-nova-ext --config-file /etc/nova/nova-cpu.conf \
    --state-path "$STATE" --host "$HOST" devices --format json)
if [[ "$devices" == *"$device"* || -e "$MDEV_DEVICES/$device" ]]; then
    echo "device $device was not freed" >&2
    exit 1
fi
