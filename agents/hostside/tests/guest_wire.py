"""Be a guest's NIC with a whole network stack: wire a product-made tap to a namespace.

    ip netns exec HOST python3 guest_wire.py TAP GUEST_NETNS

Attaches to TAP (which no qemu holds) in the host's namespace, enters GUEST_NETNS and makes a tap
called eth0 there, then copies frames both ways until killed. The guest namespace's own kernel
(SLAAC, TCP, ping) and any raw frames written on its eth0 (scapy) enter the bridge exactly where a
guest's frames enter it. Prints "ready" once both ends are open.
"""
import ctypes
import fcntl
import os
import select
import struct
import sys

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000


def open_tap(name):
    descriptor = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(descriptor, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return descriptor


def main():
    tap, guest_netns = sys.argv[1], sys.argv[2]
    host_end = open_tap(tap)
    libc = ctypes.CDLL(None, use_errno=True)
    with open(f"/run/netns/{guest_netns}") as namespace:
        if libc.setns(namespace.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
    guest_end = open_tap("eth0")  # a tap is made in the namespace of the process that asks
    print("ready", flush=True)
    other = {host_end: guest_end, guest_end: host_end}
    while True:
        readable, _, _ = select.select(list(other), [], [])
        for descriptor in readable:
            frame = os.read(descriptor, 65536)
            try:
                os.write(other[descriptor], frame)
            except OSError:
                pass  # the other end is not up yet: a wire drops the frame too


if __name__ == "__main__":
    main()
