"""A host failure reads with the program's own words first: a view that cuts the text short (the
portal's operation table shows 200 characters) still shows why, not the command line."""

from agents.hostagent import HostError


def test_details_lead_with_stderr_before_the_command_line():
    error = HostError("qemu_failed", "qemu failed to start: qemu-system-x86_64: error: failed to set MSR 0x10a",
                      stderr="qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\n",
                      argv=["qemu-system-x86_64", "-name", "guest=web1", *["-device", "x"] * 40], host="hv1")
    text = f"{error}\n{error.details()}"
    assert text.startswith("hv1: qemu failed to start: qemu-system-x86_64: error: failed to set MSR 0x10a\n"
                           "stderr: qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\ncommand: ")
