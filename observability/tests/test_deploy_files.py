"""deploy/prometheus/: the alert rules load and fire when they should (promtool, Debian's prometheus
package), the scrape configuration is valid, and the Grafana dashboard is well-formed, its queries
are PromQL and every metric it names is one the control plane or a host exporter really exports."""

import json
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.hostside.uncloud_hostside import exporter
from tests.lab.fake_qmp import start_fake_guests, stop, write_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
# A metric name, not a label (uncloud_role="host") of a selector.
METRIC_NAME = re.compile(r"\buncloud_[a-z0-9_]+\b(?!\s*(?:=|!=|=~|!~))")
SUFFIXES = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("_total",), "summary": ("_count", "_sum")}


def promtool(*args, cwd=DEPLOY):
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is missing (Debian package prometheus; bin/test installs it as root)")
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_alert_rules_load_and_fire_on_their_series():
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    names = set(re.findall(r"alert: (\w+)", (DEPLOY / "alerts.yml").read_text()))
    assert {"UncloudHostDown", "UncloudOperationStuck", "UncloudReconcilerDrift", "UncloudUnmatchedPayments"} <= names


def test_the_scrape_configuration_is_valid(tmp_path):
    token = tmp_path / "uncloud-token"
    token.write_text("secret\n")
    config = (DEPLOY / "prometheus.yml").read_text().replace("/etc/prometheus/uncloud-token", str(token))
    (tmp_path / "prometheus.yml").write_text(config)
    shutil.copy(DEPLOY / "alerts.yml", tmp_path / "alerts.yml")
    checked = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def exported_names(text) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
    return names


@pytest.fixture
def everything_exported(db, client, settings):
    settings.UNCLOUD_METRICS_TOKEN = "dashboard-check"
    control_plane = client.get("/metrics", HTTP_AUTHORIZATION="Bearer dashboard-check").content.decode()
    state_dir = Path(tempfile.mkdtemp(prefix="ucd-", dir="/tmp"))
    vm = str(uuid.uuid4())
    fake = start_fake_guests(state_dir, [vm])
    try:
        write_port(state_dir, vm, "lo")
        original = exporter.read_guard_counters
        exporter.read_guard_counters = lambda: {("lo", "spoofed-mac"): (1, 60)}
        try:
            host = exporter.collect(str(state_dir))
        finally:
            exporter.read_guard_counters = original
    finally:
        stop(fake)
        shutil.rmtree(state_dir)
    return exported_names(control_plane) | exported_names(host)


def test_the_dashboard_is_well_formed_and_queries_what_is_exported(everything_exported, tmp_path):
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    expressions = []
    for panel in panels:
        assert panel["title"] and panel["type"] in ("timeseries", "stat", "bargauge", "table", "gauge")
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["targets"], panel["title"]
        expressions += [target["expr"] for target in panel["targets"]]
    # PromQL checked by Prometheus' own parser: each query as a recording rule.
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query{index}", "expr": expr}
                                                         for index, expr in enumerate(expressions)]}]}
    (tmp_path / "queries.yml").write_text(json.dumps(rules))
    checked = promtool("check", "rules", "queries.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    named = {name for expr in expressions for name in METRIC_NAME.findall(expr)}
    alerts = set(METRIC_NAME.findall((DEPLOY / "alerts.yml").read_text()))
    assert named - everything_exported == set()
    assert alerts - everything_exported == set()
    for must in ("uncloud_operation_duration_seconds_bucket", "uncloud_vm_network_receive_bytes_total",
                 "uncloud_host_free"):
        assert must in named
