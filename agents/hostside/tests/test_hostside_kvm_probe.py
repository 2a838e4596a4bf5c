"""KVM is proven by running a throw-away guest with it, not by /dev/kvm existing; `auto` follows
that proof. These run on whatever machine the suite runs on: where KVM really works they check the
KVM path, where it does not (nested KVM without vmx/svm: qemu dies with 'failed to set MSR') the
fallback to TCG (on kvm-pvm, whose test guest runs but whose real guests stop in their boot loader,
the module is named.)"""
import functools
import json
import subprocess
import tempfile
import time
from pathlib import Path

from hostside_testlib import net_spec, nic, ok, vm_spec

from agents.hostside.uncloud_hostside import kvm
from images.demo_guest import build_demo_guest

PREFIX = "2001:db8:100:7::/64"
VM_UUID = "6f1c2d3e-0000-4000-8000-0000000000c7"


@functools.cache
def kvm_really_runs_a_guest() -> bool:
    """An independent answer: the demo guest boots from its disk with accel=kvm and prints its first
    line on the serial port within 30 s. (A machine that only runs firmware is not enough: kvm-pvm
    does that, then stops in the guest's boot loader with a KVM internal error.)"""
    guest = build_demo_guest()
    with tempfile.TemporaryDirectory() as directory:
        serial = Path(directory) / "serial.log"
        process = subprocess.Popen(
            ["qemu-system-x86_64", "-machine", "q35,accel=kvm", "-cpu", "host", "-m", "256", "-nodefaults",
             "-no-user-config", "-display", "none", "-no-reboot", "-chardev", f"file,id=serial,path={serial}",
             "-serial", "chardev:serial", "-drive", f"file={guest.disk_qcow2},format=qcow2,if=none,id=disk,snapshot=on",
             "-device", "virtio-blk-pci,drive=disk,bootindex=1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and process.poll() is None:
                if serial.exists() and b"UNCLOUD-BOOT" in serial.read_bytes():
                    return True
                time.sleep(0.2)
            return False
        finally:
            process.kill()
            process.wait()


def test_probe_recognises_a_guest_that_runs():
    # TCG runs everywhere: this is the probe's "it works" path, on any machine.
    usable, reason = kvm.kvm_probe_guest(accel="tcg")
    assert usable, reason
    assert reason == "a tcg test guest ran for 0.5 s"


def test_probe_agrees_with_a_real_kvm_guest():
    verdict = kvm.kvm_probe()
    assert verdict["usable"] == kvm_really_runs_a_guest(), verdict
    if not Path("/dev/kvm").exists():
        assert verdict["reason"].startswith("/dev/kvm:")
    elif not verdict["usable"]:
        # qemu's own words are kept, e.g. "failed to set MSR 0x10a to 0x69" on a nested KVM without
        # vmx/svm; or the kvm-pvm module is named.
        assert verdict["reason"].startswith(("a kvm test guest died: qemu-system-x86_64:", "KVM here is kvm-pvm")), \
            verdict


def test_host_info_records_the_probe_and_the_reason(lone_host):
    facts = ok(lone_host, "host-info", probe_kvm=True)  # what the host check asks
    assert facts["kvm_usable"] == kvm_really_runs_a_guest()
    assert facts["kvm_reason"]
    cache = Path(lone_host.state_dir) / "kvm-probe.json"
    cached = json.loads(cache.read_text())
    assert cached["result"] == {"usable": facts["kvm_usable"], "reason": facts["kvm_reason"]}
    # Without probe_kvm, host-info reports this boot's probe and starts no test guest.
    cached["result"]["reason"] = "as recorded"
    cache.write_text(json.dumps(cached))
    assert ok(lone_host, "host-info")["kvm_reason"] == "as recorded"
    assert ok(lone_host, "host-info", probe_kvm=True)["kvm_reason"] == facts["kvm_reason"]


def test_auto_starts_the_guest_with_what_really_works(hosts):
    host = hosts[0]
    ok(host, "net-up", **net_spec(107, PREFIX, host))
    spec = vm_spec(VM_UUID, [nic("02:00:00:aa:07:01", 107, PREFIX)], name="auto", accel="auto")
    started = ok(host, "vm-up", **spec)
    assert started["status"] == "running", started
    assert started["accel"] == ("kvm" if kvm_really_runs_a_guest() else "tcg")
    with open(f"/proc/{started['pid']}/cmdline", "rb") as handle:
        assert f"q35,accel={started['accel']}".encode() in handle.read().split(b"\0")
    ok(host, "vm-down", uuid=VM_UUID, hard=True)
