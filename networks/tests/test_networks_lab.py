"""Customer networks on real lab hosts, driven through the API and a real Celery worker:
a private network spanning two hosts, isolation from another network, DNS from the router
advertisement, the stateful firewall, NIC hot-plug and public IPv4 through NAT64 (tayga)."""

import json

import pytest

from agents.hosts import agent_for
from agents.models import Host, Operation
from networks.models import NIC, Firewall, IPv4Address, IPv4Pool, Network
from tests.lab.controlplane import (
    demo_image,
    operations_of,
    serial_log,
    use_lab,
    wait_for_operation,
    wait_for_status,
)
from tests.lab.ipv4 import add_ipv4_client
from tests.lab.qmp import qmp
from tests.lab.waiting import wait_for
from vms.models import VM

pytestmark = [pytest.mark.lab, pytest.mark.worker]

DNS_SERVER = "fd00:53::53"
NAT64_PREFIX = "fd00:64::/96"
IPV4_CLIENT, IPV4_GATEWAY = "203.0.113.2", "203.0.113.1"


def create_vm(client, image, name, *, project, networks, host=None, user_data=""):
    body = {"name": name, "cores": 1, "memory": "128M", "disk": "1G", "image": str(image.uuid),
            "networks": [str(network.uuid) for network in networks], "project": str(project.uuid),
            "user_data": user_data}
    if host is not None:
        # Placement is the scheduler's: steer it by draining the other hosts until this VM is placed.
        Host.objects.exclude(pk=host.pk).update(status="draining")
        Host.objects.filter(pk=host.pk).update(status="enabled")
    response = client.post("/api/v1/vms/", body, format="json")
    assert response.status_code == 201, response.content
    vm = VM.objects.get(uuid=response.json()["uuid"])
    if host is not None:
        wait_for(lambda: VM.objects.filter(pk=vm.pk, host__isnull=False).exists(), timeout=60,
                 message=lambda: f"{name} was not placed: {operations_of(vm)}")
        Host.objects.update(status="enabled")
    return vm


def guest_line(vm, prefix, timeout=120):
    """The first serial line of the guest that starts with prefix (waits for it)."""
    def found():
        # Whole lines only: the guest may be in the middle of writing the last one.
        return next((line.strip() for line in serial_log(vm).splitlines(keepends=True)
                     if line.startswith(prefix) and line.endswith("\n")), None)
    wait_for(found, timeout=timeout, message=lambda: f"{vm.name}: no {prefix} in:\n{serial_log(vm)[-3000:]}")
    return found()


def user_data(*settings):
    return "#cloud-config\n" + "".join(f"# {setting}\n" for setting in settings)


def tcp_reaches(namespace_run, address, port=22) -> bool:
    completed = namespace_run(["timeout", "4", "socat", "-T2", "-", f"TCP6:[{address}]:{port},connect-timeout=2"],
                              check=False)
    return "UNCLOUD-HELLO" in completed.stdout


def wait_for_firewall(vm, processes, version):
    def applied():
        firewall = Firewall.objects.get(vm=vm)
        return firewall.version == version and firewall.is_applied
    wait_for(applied, timeout=60, log_paths=processes.logs, message=lambda: f"firewall: {Firewall.objects.get(vm=vm)}")


@pytest.fixture
def ipv4_client(lab):
    """An IPv4-only namespace behind the NAT64 host (hv1): like a customer on the IPv4 internet."""
    client = add_ipv4_client(lab, lab.hosts[0], address=IPV4_CLIENT, gateway=IPV4_GATEWAY)
    yield client.run
    client.remove()


def pings(run, address) -> bool:
    return any(run(["ping", "-c", "1", "-W", "2", address], check=False).returncode == 0 for _ in range(3))


def test_private_network_isolation_dns_firewall_hotplug_and_nat64(lab, celery_processes, settings, api, alice,
                                                                   alice_project, ipv4_client):
    values, (hv1, hv2), public = use_lab(lab, settings, UNCLOUD_DNS_SERVERS=DNS_SERVER, UNCLOUD_NIC_DETACH_TIMEOUT=60)
    image = demo_image()
    processes = celery_processes(**values)
    processes.worker(concurrency=2)
    client = api["alice"]
    pool = IPv4Pool.objects.create(prefix="192.0.2.0/29", nat64_host=hv1, nat64_prefix=NAT64_PREFIX,
                                   translator_address="198.51.100.64")
    alice_project.quota_ipv4 = 2
    alice_project.save()

    private = Network.objects.get(uuid=client.post("/api/v1/networks/", {"name": "backend"}, format="json")
                                  .json()["uuid"])
    # b listens on 22/tcp; a (other host, same network) pings it; c (public network only) pings it too.
    b = create_vm(client, image, "b", project=alice_project, networks=[private], host=hv2,
                  user_data=user_data("uc.listen=22"))
    wait_for_status(b, "running", processes)
    b_address = b.nics.get().ipv6_address
    assert guest_line(b, "UNCLOUD-LISTEN") == "UNCLOUD-LISTEN 22"
    a = create_vm(client, image, "a", project=alice_project, networks=[private], host=hv1,
                  user_data=user_data(f"uc.ping={b_address}", "uc.listen=22"))
    c = create_vm(client, image, "c", project=alice_project, networks=[public], host=hv2,
                  user_data=user_data(f"uc.ping={b_address}"))
    for vm in (a, c):
        wait_for_status(vm, "running", processes)
    assert (a.host, b.host) == (hv1, hv2)
    assert guest_line(a, "UNCLOUD-PING") == f"UNCLOUD-PING {b_address} ok"  # across the VXLAN
    assert guest_line(c, "UNCLOUD-PING") == f"UNCLOUD-PING {b_address} fail"  # another network
    # Address and DNS server both come from the router advertisement (SLAAC + RDNSS).
    assert guest_line(a, "UNCLOUD-ADDR eth0") == f"UNCLOUD-ADDR eth0 {a.nics.get().ipv6_address}/64"
    assert guest_line(a, "UNCLOUD-DNS") == f"UNCLOUD-DNS {DNS_SERVER}"

    # The firewall: closed by default, 22/tcp opened on a running VM, then closed again.
    prober = lab.add_guest_namespace(lab.hosts[0], f"br{private.vni}",
                                     addresses=[private.prefix.replace("::/64", "::c1/64")])
    assert not tcp_reaches(prober.run, b_address)
    url = f"/api/v1/vms/{b.uuid}/firewall/"
    assert client.put(url, {"rules": [{"protocol": "tcp", "port_min": 22}]}, format="json").status_code == 202
    wait_for_firewall(b, processes, 1)
    assert tcp_reaches(prober.run, b_address)
    assert not tcp_reaches(prober.run, a.nics.get().ipv6_address)  # a's own rules are untouched
    assert client.put(url, {"rules": []}, format="json").status_code == 202
    wait_for_firewall(b, processes, 2)
    assert not tcp_reaches(prober.run, b_address)

    # Hot-plug: a running VM joins the public network and leaves it again, without a restart.
    pid = agent_for(hv1).call("vm-status", {"uuid": str(a.uuid)})["pid"]
    attached = client.post("/api/v1/nics/", {"vm": str(a.uuid), "network": str(public.uuid)}, format="json")
    assert attached.status_code == 202, attached.content
    attach = wait_for_operation(Operation.objects.get(uuid=attached.json()["operation"]["uuid"]), processes)
    assert attach.state == "succeeded", operations_of(a)
    nic = NIC.objects.get(uuid=attached.json()["nic"]["uuid"])
    assert nic.status == "attached" and nic.index == 1
    status = agent_for(hv1).call("vm-status", {"uuid": str(a.uuid)})
    assert status["pid"] == pid
    peripherals = qmp(f"{hv1.state_dir}/vms/{a.uuid}/qmp.sock", "qom-list", {"path": "/machine/peripheral"})
    assert "nic1" in [entry["name"] for entry in peripherals]
    # The hot-plugged port learns nothing either: the NIC's MAC is its only, static, FDB entry.
    hot_tap = tap_of(a, 1)
    assert lab.hosts[0].run(["cat", f"/sys/class/net/{hot_tap}/brport/learning"]).stdout.strip() == "0"
    fdb = json.loads(lab.hosts[0].run(["bridge", "-j", "fdb", "show", "dev", hot_tap]).stdout)
    # (Besides the tap's own MAC, which the bridge keeps as a permanent local entry.)
    assert [(entry["mac"], entry.get("state")) for entry in fdb
            if entry.get("master") and entry.get("state") != "permanent"] == [(nic.mac, "static")]
    detached = client.delete(f"/api/v1/nics/{nic.uuid}/")
    assert detached.status_code == 202, detached.content
    detach = wait_for_operation(Operation.objects.get(uuid=detached.json()["operation"]["uuid"]), processes)
    assert detach.state == "succeeded", (detach.error, detach.result)
    assert not NIC.objects.filter(pk=nic.pk).exists()
    assert agent_for(hv1).call("vm-status", {"uuid": str(a.uuid)})["pid"] == pid

    # Public IPv4 through NAT64 on hv1: mapped to b (on hv2), then re-mapped to a (on hv1).
    created = client.post("/api/v1/ipv4-addresses/", {"nic": str(b.nics.get().uuid)}, format="json")
    assert created.status_code == 201, created.content
    address = IPv4Address.objects.get(uuid=created.json()["uuid"])

    def status_is(wanted):
        address.refresh_from_db()
        return address.status == wanted
    wait_for(lambda: status_is("mapped"), timeout=60, log_paths=processes.logs,
             message=lambda: f"{address.status}: {address.status_message}")
    assert pings(ipv4_client, address.address)
    hits_before = counter_of(lab.hosts[1], b)
    assert pings(ipv4_client, address.address)
    assert counter_of(lab.hosts[1], b) > hits_before  # the echo really went to b on hv2

    remapped = client.patch(f"/api/v1/ipv4-addresses/{address.uuid}/", {"nic": str(a.nics.get().uuid)},
                            format="json")
    assert remapped.status_code == 200, remapped.content
    wait_for(lambda: status_is("mapped"), timeout=60, log_paths=processes.logs,
             message=lambda: f"{address.status}: {address.status_message}")
    hits_on_b = counter_of(lab.hosts[1], b)
    assert pings(ipv4_client, address.address)
    assert counter_of(lab.hosts[1], b) == hits_on_b  # b no longer gets it: a (on hv1) answers now
    assert client.delete(f"/api/v1/ipv4-addresses/{address.uuid}/").status_code == 204
    wait_for(lambda: not Operation.objects.filter(kind="ipv4.sync", target_uuid=pool.uuid)
             .exclude(state__in=["succeeded", "failed", "cancelled"]).exists(), timeout=60)
    assert not pings(ipv4_client, address.address)

    for vm in (a, b, c):
        assert client.delete(f"/api/v1/vms/{vm.uuid}/").status_code == 202
    for vm in (a, b, c):
        wait_for_status(vm, "deleted", processes)


def tap_of(vm, index) -> str:
    from agents.hostside.uncloud_hostside.addressing import derived_tap_name

    return derived_tap_name(str(vm.uuid), index)


def counter_of(lab_host, vm) -> int:
    """Packets the host sent down the VM's first tap, i.e. into the guest."""
    return int(lab_host.run(["cat", f"/sys/class/net/{tap_of(vm, 0)}/statistics/tx_packets"]).stdout)
