"""Be a guest's NIC for a moment: attach to an existing tap, send raw frames, print what arrives.

    ip netns exec HOST python3 tap_io.py TAP SECONDS  < frames.hex

Frames to send come on stdin as hex, one per line. Prints "ready" once attached, then one
"rx <hex>" line per frame the tap delivers during SECONDS. A tap delivers frames to exactly one
holder, so this only works on a tap that no qemu holds.
"""
import fcntl
import os
import select
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
BRIDGE_PORT_FORWARDING = "3"


def wait_until_bridge_forwards(tap, timeout_s=5.0):
    """The bridge port follows the tap's carrier, which comes up when we attach, but the kernel
    applies that change in a batch up to a second later: frames sent before are dropped."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with open(f"/sys/class/net/{tap}/brport/state") as state:
            if state.read().strip() == BRIDGE_PORT_FORWARDING:
                return
        time.sleep(0.02)
    raise SystemExit(f"bridge port {tap} not forwarding after {timeout_s} s")


def main():
    tap, seconds = sys.argv[1], float(sys.argv[2])
    frames = [bytes.fromhex(line) for line in sys.stdin.read().split()]
    descriptor = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(descriptor, TUNSETIFF, struct.pack("16sH", tap.encode(), IFF_TAP | IFF_NO_PI))
    wait_until_bridge_forwards(tap)
    print("ready", flush=True)
    for frame in frames:
        os.write(descriptor, frame)
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([descriptor], [], [], remaining)
        if readable:
            print("rx", os.read(descriptor, 65536).hex(), flush=True)
    os.close(descriptor)


if __name__ == "__main__":
    main()
