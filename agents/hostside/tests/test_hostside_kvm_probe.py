"""KVM is proven by running a throw-away guest with it, not by /dev/kvm existing; `auto` follows
that proof. These run on whatever machine the suite runs on: where KVM really works they check the
KVM path, where it does not (nested KVM without vmx/svm: qemu dies with 'failed to set MSR') the
fallback to TCG."""
import json
import subprocess
from pathlib import Path

from hostside_testlib import net_spec, nic, ok, vm_spec

from agents.hostside.uncloud_hostside import kvm

PREFIX = "2001:db8:100:7::/64"
VM_UUID = "6f1c2d3e-0000-4000-8000-0000000000c7"


def kvm_really_runs_a_guest() -> bool:
    """An independent answer: qemu with accel=kvm boots a kernel-less machine for 2 s, or dies.
    (timeout ends a guest that keeps running; qemu that dies returns at once with its error.)"""
    completed = subprocess.run(
        ["timeout", "2", "qemu-system-x86_64", "-machine", "q35,accel=kvm", "-cpu", "host", "-m", "32",
         "-nodefaults", "-no-user-config", "-display", "none"],
        capture_output=True, text=True, check=False)
    return completed.returncode == 124  # killed by timeout: it was still running


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
        # qemu's own words are kept, e.g. "failed to set MSR 0x10a to 0x69" on this project's CI.
        assert verdict["reason"].startswith("a kvm test guest died: qemu-system-x86_64:"), verdict


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
