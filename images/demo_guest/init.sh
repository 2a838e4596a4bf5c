#!/bin/busybox sh
# /init of the uncloud demo guest (runs as PID 1 from the initramfs).
# Parameters (kernel command line, or uncloud.cfg on a config drive labelled cidata) and the
# UNCLOUD-* lines it prints are documented in README.md next to this file.
# Every step is allowed to fail: it reports and the script goes on, so the guest always
# reaches UNCLOUD-READY and stays controllable.

/bin/busybox mkdir -p /proc /sys /dev /tmp /run /mnt/cidata /etc/acpi/PWRF
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
set -f  # settings are split on blanks; a URL with * or ? must not be globbed

say() {
    echo "$*"
    # The VNC console is tty0; when the serial port is the console also show the lines there.
    if [ "$serial_is_console" = 1 ]; then echo "$*" > /dev/tty0 2>/dev/null; fi
}
serial_is_console=0
grep -q 'console=ttyS' /proc/cmdline && serial_is_console=1

uc_ping=""
uc_fetch=""
uc_poweroff=0
uc_timeout=30
uc_shell=1
uc_hostname=uncloud-demo
uc_metadata=0
uc_listen=""
uc_echo=""
apply_setting() {
    case "$1" in
        uc.ping=*) uc_ping="${1#*=}" ;;
        uc.fetch=*) uc_fetch="${1#*=}" ;;
        uc.poweroff=*) uc_poweroff="${1#*=}" ;;
        uc.timeout=*) uc_timeout="${1#*=}" ;;
        uc.shell=*) uc_shell="${1#*=}" ;;
        uc.hostname=*) uc_hostname="${1#*=}" ;;
        uc.metadata=*) uc_metadata="${1#*=}" ;;
        uc.listen=*) uc_listen="${1#*=}" ;;
        uc.echo=*) uc_echo="${1#*=}" ;;
    esac
}
for word in $(cat /proc/cmdline); do apply_setting "$word"; done

say "UNCLOUD-BOOT $(uname -r)"

for module in $(cat /etc/uncloud-modules); do
    insmod "/lib/modules/$module.ko" 2>/dev/null || say "UNCLOUD-WARN module $module failed"
done

# Links go up first: router solicitation and duplicate address detection (about 2 s)
# then run while the rest of the setup does.
ip link set lo up
interfaces=""
for name in $(ls /sys/class/net); do
    [ "$name" = lo ] && continue
    ip link set "$name" up && interfaces="$interfaces $name"
done

power_off() {
    say ""
    say "UNCLOUD-POWEROFF $1"
    umount /mnt/cidata 2>/dev/null
    sync
    poweroff -f
}

# ACPI power button (QMP system_powerdown): busybox acpid maps the button to the event
# PWRF/00000080 and runs the file of that name under its config directory.
cat > /etc/acpi/PWRF/00000080 <<'EOF'
#!/bin/sh
printf '\nUNCLOUD-POWEROFF acpi\n' > /dev/console
umount /mnt/cidata 2>/dev/null
sync
poweroff -f
EOF
chmod +x /etc/acpi/PWRF/00000080
if acpid -c /etc/acpi -l /tmp/acpid.log -p /run/acpid.pid; then
    say "UNCLOUD-ACPI ok"
else
    say "UNCLOUD-ACPI fail"
fi

# A config drive overrides the disk's baked-in command line. virtio disks are probed
# while insmod runs, so they are all there by now.
cidata_device=$(findfs LABEL=cidata 2>/dev/null || findfs LABEL=CIDATA 2>/dev/null)
if [ -n "$cidata_device" ]; then
    if mount -o ro "$cidata_device" /mnt/cidata; then
        if [ -f /mnt/cidata/uncloud.cfg ]; then
            for word in $(grep -v '^#' /mnt/cidata/uncloud.cfg); do apply_setting "$word"; done
        fi
        # Settings a customer passes in user-data, as YAML comments ("# uc.ping=...").
        for word in $(sed -n 's/^#[[:space:]]*\(uc\.[a-z]*=[^[:space:]]*\)[[:space:]]*$/\1/p' \
                      /mnt/cidata/user-data 2>/dev/null); do
            apply_setting "$word"
        done
        meta_hostname=$(sed -n 's/^local-hostname:[[:space:]]*//p' /mnt/cidata/meta-data 2>/dev/null | head -n 1)
        [ -n "$meta_hostname" ] && uc_hostname="$meta_hostname"
        say "UNCLOUD-CIDATA $cidata_device ok"
        # NoCloud public-keys, one JSON-quoted key per "  - " line (as uncloud writes them).
        sed -n 's/^  - "\(.*\)"$/\1/p' /mnt/cidata/meta-data 2>/dev/null | while read -r key; do
            say "UNCLOUD-CIDATA-KEY $key"
        done
    else
        say "UNCLOUD-CIDATA $cidata_device fail"
    fi
fi
hostname "$uc_hostname" && say "UNCLOUD-HOSTNAME $uc_hostname"

[ -z "$interfaces" ] && say "UNCLOUD-ADDR eth0 none"

usable_global_address() {
    # Tentative addresses are still in duplicate address detection and cannot be used yet.
    ip -6 -o addr show dev "$1" scope global 2>/dev/null \
        | grep -v -e tentative -e dadfailed | awk '{print $4}' | head -n 1
}
deadline=$(( $(cut -d. -f1 /proc/uptime) + uc_timeout ))
for name in $interfaces; do
    address=$(usable_global_address "$name")
    while [ -z "$address" ] && [ "$(cut -d. -f1 /proc/uptime)" -lt "$deadline" ]; do
        sleep 0.2
        address=$(usable_global_address "$name")
    done
    say "UNCLOUD-MAC $name $(cat /sys/class/net/$name/address)"
    say "UNCLOUD-ADDR $name ${address:-none}"
done

if [ -x /bin/rdisc6 ] && [ -n "$interfaces" ]; then
    # The kernel applies prefixes from router advertisements but drops RDNSS: ask again.
    for name in $interfaces; do
        for server in $(rdisc6 -1 -r 2 -w 1500 "$name" 2>/dev/null \
                        | sed -n 's/^ *Recursive DNS server *: *//p'); do
            say "UNCLOUD-DNS $server"
            echo "nameserver $server" >> /etc/resolv.conf
        done
    done
fi

if [ "$uc_metadata" = 1 ] && [ -n "$interfaces" ]; then
    # The host's metadata service on the first interface's link (it knows us by our address).
    first_interface=$(echo $interfaces | cut -d' ' -f1)
    metadata_url="http://[fe80::a9fe:a9fe%$first_interface]"
    if timeout 10 wget -q -O /tmp/instance-id "$metadata_url/latest/meta-data/instance-id" 2>/tmp/metadata.log; then
        say "UNCLOUD-METADATA instance-id $(head -n 1 /tmp/instance-id)"
        index=0
        while timeout 10 wget -q -O /tmp/key "$metadata_url/latest/meta-data/public-keys/$index/openssh-key" \
                2>/dev/null && [ "$index" -lt 32 ]; do
            say "UNCLOUD-METADATA key $(head -n 1 /tmp/key)"
            index=$((index + 1))
        done
    else
        say "UNCLOUD-METADATA fail $(head -n 1 /tmp/metadata.log)"
    fi
fi

if [ -n "$uc_ping" ]; then
    # One echo at a time: the first may be lost to neighbour discovery, and waiting for
    # three in a row costs two seconds for nothing.
    ping_result=fail
    for attempt in 1 2 3; do
        if ping -c 1 -W 2 "$uc_ping" >> /tmp/ping.log 2>&1; then
            ping_result=ok
            break
        fi
    done
    say "UNCLOUD-PING $uc_ping $ping_result"
fi

if [ -n "$uc_fetch" ]; then
    # busybox 1.35 wget -T segfaults when the connection fails: bound it with timeout instead.
    if timeout 20 wget -q -O /tmp/fetched "$uc_fetch" 2>/tmp/fetch.log; then
        checksum=$(sha256sum /tmp/fetched | cut -d' ' -f1)
        say "UNCLOUD-FETCH $uc_fetch ok $checksum $(head -n 1 /tmp/fetched | cut -c1-200)"
    else
        say "UNCLOUD-FETCH $uc_fetch fail $(head -n 1 /tmp/fetch.log)"
    fi
fi

if [ -n "$uc_listen" ]; then
    # A TCP service for firewall tests: every connection is answered with one line.
    nc -ll -p "$uc_listen" -e /bin/echo "UNCLOUD-HELLO $uc_hostname" </dev/null >/dev/null 2>&1 &
    say "UNCLOUD-LISTEN $uc_listen"
fi

if [ -n "$uc_echo" ]; then
    # A TCP service that keeps its connections (for migration tests): it greets with the boot id
    # and uptime, echoes every line, and writes/reads a marker on the root disk 512 MiB in
    # (beyond the boot filesystem), reading it back past the page cache.
    cat > /bin/uc-echo <<'EOF'
#!/bin/sh
echo "UNCLOUD-ECHO $(cat /proc/sys/kernel/random/boot_id) $(cut -d' ' -f1 /proc/uptime)"
while read -r line; do
    case "$line" in
        mark\ *)
            printf '%-32s' "${line#mark }" | dd of=/dev/vda bs=32 seek=16777216 count=1 conv=notrunc,fsync 2>/dev/null
            sync
            echo "MARKED" ;;
        read)
            sync; echo 3 > /proc/sys/vm/drop_caches
            echo "MARK $(dd if=/dev/vda bs=32 skip=16777216 count=1 2>/dev/null | tr -d ' \000')" ;;
        uptime) echo "UPTIME $(cat /proc/sys/kernel/random/boot_id) $(cut -d' ' -f1 /proc/uptime)" ;;
        *) echo "$line" ;;
    esac
done
EOF
    chmod +x /bin/uc-echo
    nc -ll -p "$uc_echo" -e /bin/uc-echo </dev/null >/dev/null 2>&1 &
    say "UNCLOUD-ECHO-LISTEN $uc_echo"
fi

say "UNCLOUD-READY"

[ "$uc_poweroff" = 1 ] && power_off requested

# Stay up under busybox init: it reaps orphans, respawns the console shells and handles
# a `poweroff` typed into them.
{
    if [ "$uc_shell" = 1 ]; then
        echo "ttyS0::respawn:/bin/sh -l"
        echo "tty1::respawn:/bin/sh -l"
    fi
    echo "::ctrlaltdel:/bin/poweroff"
} > /etc/inittab
exec init
