"""The proof of #20: a real Prometheus (Debian's package) finds the control plane and a lab host's
exporter through the service discovery, scrapes both, and a PromQL query shows a lab VM's network
bytes rising while a peer pings it. The same exporter feeds the customer's graph (sampling)."""

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from agents.hosts import agent_for
from observability import sampling
from observability.exporters import ensure_exporter, exporter_target
from tests.lab.controlplane import demo_image, use_lab, wait_for_status
from tests.lab.traffic import Pinger
from tests.lab.waiting import wait_for
from vms.models import VM

pytestmark = [pytest.mark.lab, pytest.mark.worker]
TOKEN = "lab-scrape-token"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Prometheus:
    def __init__(self, workdir, discovery_url):
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.skip("prometheus is missing (Debian package prometheus; bin/test installs it as root)")
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "token").write_text(TOKEN)
        # `type: Bearer` spelled out: Prometheus 2.42 sends a discovery request's credentials without it.
        credentials = {"type": "Bearer", "credentials_file": str(workdir / "token")}
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{
                "job_name": "uncloud",
                "authorization": credentials,
                "http_sd_configs": [{"url": discovery_url, "refresh_interval": "1s", "authorization": credentials}],
            }],
        }
        (workdir / "prometheus.yml").write_text(json.dumps(config))
        self.port = free_port()
        self.log = workdir / "prometheus.log"
        self.process = subprocess.Popen(
            [binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=self.log.open("w"))

    def query(self, promql: str) -> list:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.load(response)["data"]["result"]
        except OSError:
            return []

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def targets(self) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/targets", timeout=5) as response:
                return response.read().decode()
        except OSError as error:
            return str(error)

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def test_prometheus_scrapes_the_control_plane_and_a_host_through_discovery(
        lab, celery_processes, settings, api, live_server, tmp_path):
    values, hosts, network = use_lab(lab, settings, hosts=lab.hosts[:1])
    settings.UNCLOUD_METRICS_TOKEN = TOKEN
    # The discovery names the control plane as Prometheus should reach it (the live server's port).
    settings.UNCLOUD_METRICS_SELF_TARGET = f"127.0.0.1:{urllib.parse.urlsplit(live_server.url).port}"
    host = hosts[0]
    processes = celery_processes(**values)
    processes.worker()
    response = api["alice"].post("/api/v1/vms/", {"name": "watched", "cores": 1, "memory": "128M", "disk": "1G",
                                                  "image": str(demo_image().uuid)}, format="json")
    assert response.status_code == 201, response.content
    vm = VM.objects.get(uuid=response.json()["uuid"])
    wait_for_status(vm, "running", processes, timeout=180)
    address = vm.nics.get().ipv6_address

    prometheus = pinger = None
    try:
        # The first sampling round finds no exporter and starts it (the beat task heals itself).
        assert sampling.sample_host(host) == 0
        assert ensure_exporter(host)["started"] is False  # now it runs: a second start changes nothing
        # It answers the scraper token only (Prometheus presents it to every target of the job).
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://{exporter_target(host)}/metrics", timeout=5)
        assert refused.value.code == 401
        prometheus = Prometheus(tmp_path / "prometheus", f"{live_server.url}/metrics/targets")

        def both_up():
            up = {item["metric"].get("uncloud_role"): item["value"][1] for item in prometheus.query("up")}
            return up == {"control-plane": "1", "host": "1"}
        wait_for(both_up, timeout=90, message=lambda: f"targets: {prometheus.targets()[:3000]}")
        assert prometheus.value(f'uncloud_vms{{status="running", site="{settings.UNCLOUD_SITE_NAME}"}}') == 1
        # The worker's engine counted the create (create to running) and its steps as they ended.
        assert prometheus.value('uncloud_operation_duration_seconds_count{kind="vm.create", state="succeeded"}') == 1
        assert prometheus.value('sum(uncloud_operation_step_duration_seconds_count{kind="vm.create"})') >= 3
        host_labels = prometheus.query('up{uncloud_role="host"}')[0]["metric"]
        assert host_labels["host"] == host.name and host_labels["status"] == "enabled"
        assert host_labels["instance"] == exporter_target(host)

        received = f'uncloud_vm_network_receive_bytes_total{{vm="{vm.uuid}", host="{host.name}"}}'
        wait_for(lambda: prometheus.value(received) is not None, timeout=30,
                 message=lambda: f"no {received}: {prometheus.targets()[:3000]}")
        vm_label = f'vm="{vm.uuid}"'
        assert prometheus.value(f"uncloud_vm_cpu_seconds_total{{{vm_label}}}") > 0
        assert prometheus.value(f"uncloud_vm_memory_rss_bytes{{{vm_label}}}") > 64 << 20
        assert prometheus.query(f"uncloud_vm_disk_read_bytes_total{{{vm_label}}}"), "no QMP block stats"
        reasons = {item["metric"]["reason"] for item in
                   prometheus.query(f"uncloud_vm_guard_dropped_packets_total{{{vm_label}}}")}
        assert {"spoofed-mac", "spoofed-ipv6", "router-advert"} <= reasons, reasons
        assert prometheus.value('uncloud_host_memory_available_bytes{uncloud_role="host"}') > 0
        pinger_ns = lab.add_guest_namespace(lab.hosts[0], f"br{network.vni}",
                                            addresses=[network.prefix.replace("::/64", "::c3/64")])
        wait_for(lambda: pinger_ns.run(["ping", "-c", "1", "-W", "1", address], check=False).returncode == 0,
                 timeout=90, message=f"{address} does not answer")
        sampling.sample_host(host)
        before = prometheus.value(received)
        pinger = Pinger(pinger_ns.netns, address)
        time.sleep(6)
        wait_for(lambda: prometheus.value(received) > before + 20 * 100, timeout=30,
                 message=lambda: f"{received} stayed at {prometheus.value(received)} (before: {before})")
        rate = prometheus.value(f"rate({received}[5s])")
        pings = pinger.stop()
        pinger = None
        assert pings["answered"] > 20, pings
        assert rate is not None and rate > 0
        # A ping is about 100 bytes on the wire: ten a second is about a kilobyte a second.
        print(f"\nPrometheus: {received} rose while pinging, rate {rate:.0f} B/s; pings {pings}")

        # The customer's graph: a second sample after the pings shows the traffic too.
        sampling.sample_host(host)
        series = api["alice"].get(f"/api/v1/vms/{vm.uuid}/metrics/?range=1h").json()["series"]
        assert series["network_receive"]["points"] and series["network_receive"]["points"][-1][1] > 0
        assert series["cpu"]["points"][-1][1] > 0
        assert api["charlie"].get(f"/api/v1/vms/{vm.uuid}/metrics/").status_code == 404

        # A site whose Prometheus scrapes the exporters: the graphs come from it.
        settings.UNCLOUD_METRICS_PROMETHEUS_URL = f"http://127.0.0.1:{prometheus.port}"
        usage = api["bob"].get(f"/api/v1/vms/{vm.uuid}/metrics/?range=1h").json()
        assert usage["source"] == "prometheus"
        assert max(point[1] for point in usage["series"]["network_receive"]["points"]) > 0, usage
        assert usage["memory_bytes"] > 64 << 20
    finally:
        if pinger is not None:
            pinger.stop()
        if prometheus is not None:
            prometheus.stop()
        agent_for(host).call("exporter-down", {"state_dir": host.state_dir})
