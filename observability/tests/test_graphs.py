"""Customers' usage graphs: the series through the API and the pictures on the VM page, from the
samples the control plane keeps; alice (owner) and bob (member) see them, charlie (stranger) gets 404."""

from datetime import timedelta

import pytest
from django.utils import timezone

from observability.exporters import vm_counters
from observability.models import VMSample
from observability.sampling import prune_samples
from vms.models import VM


@pytest.fixture
def vm(alice_project):
    return VM.objects.create(project=alice_project, name="web", cores=1, memory_mib=512, status="running")


def sample(vm, minutes_ago, cpu, received, written=0, now=None):
    now = now or timezone.now()
    return VMSample.objects.create(vm_uuid=vm.uuid, taken=now - timedelta(minutes=minutes_ago),
                                   cpu_seconds=cpu, memory_bytes=300 << 20, network_receive_bytes=received,
                                   network_transmit_bytes=received // 2, disk_read_bytes=0, disk_write_bytes=written)


def test_the_api_gives_rates_between_samples(api, vm):
    now = timezone.now()
    sample(vm, 3, cpu=10.0, received=0, now=now)
    sample(vm, 2, cpu=40.0, received=6_000_000, written=600, now=now)
    sample(vm, 1, cpu=1.0, received=600, now=now)  # qemu restarted: counters began again
    sample(vm, 60 * 5, cpu=0.0, received=0, now=now)  # outside the hour
    body = api["alice"].get(f"/api/v1/vms/{vm.uuid}/metrics/?range=1h").json()
    cpu = body["series"]["cpu"]
    assert cpu["unit"] == "cores"
    assert [round(point[1], 3) for point in cpu["points"]] == [0.5, round(1.0 / 60, 3)]
    assert [round(point[1]) for point in body["series"]["network_receive"]["points"]] == [100_000, 10]
    assert [round(point[1]) for point in body["series"]["disk_write"]["points"]] == [10, 0]
    assert body["memory_bytes"] == 300 << 20
    day = api["bob"].get(f"/api/v1/vms/{vm.uuid}/metrics/?range=1d").json()
    assert len(day["series"]["cpu"]["points"]) == 3  # the five-hour-old sample counts for the day
    assert api["charlie"].get(f"/api/v1/vms/{vm.uuid}/metrics/").status_code == 404
    refused = api["alice"].get(f"/api/v1/vms/{vm.uuid}/metrics/?range=1y")
    assert refused.status_code == 400 and "range" in refused.json()


def test_a_day_of_samples_is_thinned(api, vm):
    now = timezone.now()
    VMSample.objects.bulk_create([VMSample(vm_uuid=vm.uuid, taken=now - timedelta(minutes=minute),
                                           cpu_seconds=float(1440 - minute)) for minute in range(1440)])
    points = api["alice"].get(f"/api/v1/vms/{vm.uuid}/metrics/?range=1d").json()["series"]["cpu"]["points"]
    assert 250 <= len(points) <= 290
    assert all(point[1] == pytest.approx(1 / 60, rel=0.01) for point in points)


def test_the_vm_page_shows_the_pictures(client, alice, bob, charlie, vm):
    sample(vm, 2, cpu=0.0, received=0)
    sample(vm, 1, cpu=30.0, received=60_000)
    client.force_login(alice)
    page = client.get(f"/vms/{vm.uuid}/").content.decode()
    for graph in ("cpu", "network", "disk"):
        assert f"/graphs/vms/{vm.uuid}/{graph}.svg?range=1h" in page
        assert f"/graphs/vms/{vm.uuid}/{graph}.svg?range=1d" in page
    picture = client.get(f"/graphs/vms/{vm.uuid}/network.svg?range=1h")
    assert picture.status_code == 200 and picture["Content-Type"] == "image/svg+xml"
    svg = picture.content.decode()
    assert svg.startswith("<svg") and 'data-series="network_receive"' in svg and "<script" not in svg
    assert client.get(f"/graphs/vms/{vm.uuid}/cpu.svg?range=1y").status_code == 400
    assert client.get(f"/graphs/vms/{vm.uuid}/secrets.svg").status_code == 404
    client.force_login(bob)
    assert client.get(f"/graphs/vms/{vm.uuid}/cpu.svg?range=1d").status_code == 200
    client.force_login(charlie)
    assert client.get(f"/graphs/vms/{vm.uuid}/cpu.svg").status_code == 404
    client.logout()
    assert client.get(f"/graphs/vms/{vm.uuid}/cpu.svg").status_code == 302  # to the login page


def test_an_empty_graph_says_so(client, alice, vm):
    client.force_login(alice)
    assert "no samples yet" in client.get(f"/graphs/vms/{vm.uuid}/disk.svg").content.decode()


def test_samples_older_than_the_retention_are_pruned(settings, vm):
    settings.UNCLOUD_METRICS_RETENTION_HOURS = 48
    sample(vm, 60 * 49, cpu=0.0, received=0)
    kept = sample(vm, 60 * 47, cpu=0.0, received=0)
    assert prune_samples() == 1
    assert list(VMSample.objects.values_list("pk", flat=True)) == [kept.pk]


def test_exporter_text_becomes_one_row_of_counters_per_vm():
    text = (
        "# HELP uncloud_vm_cpu_seconds_total CPU\n# TYPE uncloud_vm_cpu_seconds_total counter\n"
        'uncloud_vm_cpu_seconds_total{vm="a"} 12.5\n'
        "# HELP uncloud_vm_network_receive_bytes_total rx\n# TYPE uncloud_vm_network_receive_bytes_total counter\n"
        'uncloud_vm_network_receive_bytes_total{vm="a",tap="t1",mac="m"} 100\n'
        'uncloud_vm_network_receive_bytes_total{vm="a",tap="t2",mac="n"} 50\n'
        "# HELP uncloud_vm_disk_write_bytes_total w\n# TYPE uncloud_vm_disk_write_bytes_total counter\n"
        'uncloud_vm_disk_write_bytes_total{vm="b",device="vda"} 4096\n'
        "# HELP uncloud_host_load l\n# TYPE uncloud_host_load gauge\n"
        'uncloud_host_load{period="1m"} 0.5\n'
    )
    counters = vm_counters(text)
    assert counters["a"]["cpu_seconds"] == 12.5
    assert counters["a"]["network_receive_bytes"] == 150
    assert counters["b"]["disk_write_bytes"] == 4096
    assert set(counters) == {"a", "b"}


def test_without_an_answer_from_prometheus_the_kept_samples_are_used(api, vm, settings):
    now = timezone.now()
    sample(vm, 2, cpu=0.0, received=0, now=now)
    sample(vm, 1, cpu=30.0, received=0, now=now)
    settings.UNCLOUD_METRICS_PROMETHEUS_URL = "http://127.0.0.1:9"  # discard port: nothing listens
    body = api["alice"].get(f"/api/v1/vms/{vm.uuid}/metrics/").json()
    assert body["source"] == "samples" and body["series"]["cpu"]["points"][0][1] == 0.5
