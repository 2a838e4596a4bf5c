"""Traffic that proves a guest stays reachable: a ping from a namespace, counted afterwards."""

import re
import signal
import subprocess

PING_INTERVAL_S = 0.1


class Pinger:
    """ping from inside netns to address until stop(), which says how much was lost and the
    longest gap (a live migration's downtime as a guest's peer sees it)."""

    def __init__(self, netns: str, address: str, interval_s: float = PING_INTERVAL_S):
        self.interval_s = interval_s
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", netns, "ping", "-n", "-i", str(interval_s), "-W", "1", address],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self) -> dict:
        self.process.send_signal(signal.SIGINT)
        output, _ = self.process.communicate(timeout=10)
        answered = sorted({int(seq) for seq in re.findall(r"icmp_seq=(\d+)", output)})
        sent = int(re.search(r"(\d+) packets transmitted", output).group(1))
        lost = sorted(set(range(1, sent + 1)) - set(answered))
        longest, run, previous = 0, 0, None
        for seq in lost:
            run = run + 1 if previous == seq - 1 else 1
            longest, previous = max(longest, run), seq
        return {"sent": sent, "answered": len(answered), "lost": len(lost),
                "longest_gap_ms": round((longest + 1) * self.interval_s * 1000) if longest else 0}
