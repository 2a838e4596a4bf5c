#!/bin/bash
# The bare "seed" way of starting a VM, as the first prototype did it by hand: a tap on the
# network's bridge, then qemu, no control plane, no state files, no firewall. bench/vm_up.py
# runs this inside a lab host's namespace as the baseline for `vm-up`, so the qemu options are
# the ones the host-side program uses (see qemu_argv in agents/hostside/uncloud_hostside/vmspec.py).
#
# usage: seed_vm_up.sh BRIDGE TAP MAC VM_DIR DISK_QCOW2 MEMORY_MIB CORES NAME UUID
#
# Returns once QMP answers query-status with "running", the same end point vm-up reports.
set -euo pipefail

if [[ $# -ne 9 ]]; then
    echo "usage: $0 BRIDGE TAP MAC VM_DIR DISK_QCOW2 MEMORY_MIB CORES NAME UUID" >&2
    exit 2
fi
bridge=$1 tap=$2 mac=$3 vm_dir=$4 disk=$5 memory_mib=$6 cores=$7 name=$8 vm_uuid=$9
qmp_socket=$vm_dir/qmp.sock

ip tuntap add dev "$tap" mode tap
ip link set dev "$tap" master "$bridge"
ip link set dev "$tap" up

mkdir -p "$vm_dir"
qemu-system-x86_64 \
    -name "guest=$name,debug-threads=on" -uuid "$vm_uuid" \
    -machine q35,accel=tcg -m "$memory_mib" -smp "$cores" \
    -nodefaults -no-user-config -device VGA -display none \
    -vnc "unix:$vm_dir/vnc.sock" \
    -qmp "unix:$qmp_socket,server=on,wait=off" \
    -serial "file:$vm_dir/serial.log" \
    -pidfile "$vm_dir/qemu.pid" -daemonize \
    -drive "file=$disk,format=qcow2,if=virtio,id=disk0" \
    -netdev "tap,id=net0,ifname=$tap,script=no,downscript=no" \
    -device "virtio-net-pci,netdev=net0,mac=$mac,romfile="

# One QMP conversation through socat as a coprocess: greeting, capabilities, query-status.
# Reading the replies line by line (rather than piping a here-string into socat) ends the wait
# as soon as the answer is there; socat's own half-close timeout would add up to 0.5 s.
qmp_status() {
    local line status=unresponsive
    coproc QMP { exec socat - "UNIX-CONNECT:$qmp_socket" 2>/dev/null; }
    printf '%s\n' '{"execute":"qmp_capabilities"}' '{"execute":"query-status"}' >&"${QMP[1]}"
    while read -r -t 5 line <&"${QMP[0]}"; do
        if [[ $line == *'"status": '* ]]; then
            status=${line#*\"status\": \"}
            status=${status%%\"*}
            break
        fi
    done
    kill "$QMP_PID" 2>/dev/null || true
    wait "$QMP_PID" 2>/dev/null || true
    echo "$status"
}

# qemu -daemonize returns after the QMP socket listens, so the first answer normally settles it;
# the loop only covers a slow start.
for _ in $(seq 1 500); do
    status=$(qmp_status)
    if [[ $status == running ]]; then
        exit 0
    fi
    sleep 0.01
done
echo "QMP never reported running (last: $status)" >&2
exit 1
