"""A lab host whose wall clock jumps, while this machine's clock (shared by everyone on it) does not.

libfaketime (Debian `libfaketime`, installed by bin/test) is preloaded into every process of the
host's SSH sessions: the host program, what it starts (guard, exporter, ip, nft, qemu-img) and its
qemu, as on a real host whose clock jumped, where qemu sees the jump too. It shifts the wall clock
(CLOCK_REALTIME, gettimeofday, time) by the offset in a file this module rewrites mid-run, and
leaves CLOCK_MONOTONIC alone (FAKETIME_DONT_FAKE_MONOTONIC): a real jump moves only the wall clock.
A time namespace could not do this: it shifts the monotonic and boot clocks only.

The control plane (this test process, worker, beat, watcher) keeps the true time. Unlike a real
jump, the kernel's own timestamps (file times, packet times) stay true."""

import subprocess
from pathlib import Path

from tests.lab.hosts import _kill_and_wait, processes_in_netns

LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
SHIM_SOURCE = Path(__file__).with_name("clock_nanosleep_shim.c")
# How long a process keeps an offset before reading the file again: a jump lands within a second,
# and qemu (which asks the time constantly) does not read a file at every call.
CACHE_SECONDS = 1


def build_shim(directory: Path) -> Path:
    """The clock_nanosleep fix preloaded before libfaketime (see the C file for why)."""
    library = directory / "clock_nanosleep_shim.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(library), str(SHIM_SOURCE), "-ldl"],
                   check=True, capture_output=True, text=True)
    return library


class JumpingClock:
    """`with JumpingClock(lab_host) as clock: clock.jump(3600)`: the host's wall clock runs `offset`
    seconds from the true time. Entering restarts the host's sshd with libfaketime in its sessions'
    environment and stops the host's guard and exporter, so that the next heartbeat and metrics round
    start them again under the host's clock; leaving puts everything back the same way."""

    def __init__(self, lab_host):
        if not Path(LIBFAKETIME).exists():
            raise RuntimeError(f"{LIBFAKETIME} is missing: bin/test installs the Debian package libfaketime")
        self.lab_host = lab_host
        self.offset_file = lab_host.files_dir / "clock-offset"
        self.original_config = lab_host.sshd_config_path.read_text()

    def __enter__(self):
        self.jump(0)
        shim = build_shim(self.lab_host.files_dir)
        environment = {
            "LD_PRELOAD": f"{shim}:{LIBFAKETIME}",
            "FAKETIME_TIMESTAMP_FILE": str(self.offset_file),
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "FAKETIME_CACHE_DURATION": str(CACHE_SECONDS),
        }
        setenv = "SetEnv " + " ".join(f"{name}={value}" for name, value in environment.items())
        self._restart_sshd(self.original_config + setenv + "\n")
        self._stop_daemons(faked=False)
        return self

    def __exit__(self, *exc_info):
        self.jump(0)
        self._restart_sshd(self.original_config)
        self._stop_daemons(faked=True)

    def jump(self, offset_seconds: int) -> None:
        """From now on (within CACHE_SECONDS) the host's wall clock is the true time plus this."""
        temporary = self.offset_file.with_suffix(".tmp")
        temporary.write_text(f"{offset_seconds:+d}\n")
        temporary.replace(self.offset_file)

    def host_time(self) -> float:
        """The host's wall clock as its SSH sessions read it (seconds since the epoch)."""
        completed = subprocess.run(self.lab_host.ssh_argv(["date", "+%s.%N"]), check=True, capture_output=True,
                                   text=True, timeout=30)
        return float(completed.stdout)

    def runs_on_host_clock(self, pid: int) -> bool:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False
        return f"FAKETIME_TIMESTAMP_FILE={self.offset_file}".encode() in environ

    def daemon_pids(self, kind: str) -> list[int]:
        """The host program's long-lived `guard` or `exporter` of this host's state dir."""
        pids = []
        for pid in processes_in_netns(self.lab_host.netns):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
            except OSError:
                continue
            if argv[-2:] == [kind, str(self.lab_host.state_dir)]:
                pids.append(pid)
        return pids

    def _restart_sshd(self, config: str) -> None:
        self.lab_host.stop_sshd()  # its sessions too: no host program outlives the change unnoticed
        self.lab_host.sshd_config_path.write_text(config)
        self.lab_host.start_sshd()

    def _stop_daemons(self, faked: bool) -> None:
        for kind in ("guard", "exporter"):
            _kill_and_wait(pid for pid in self.daemon_pids(kind) if self.runs_on_host_clock(pid) == faked)

