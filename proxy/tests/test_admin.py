"""Staff designate proxy hosts in the admin (each save syncs them all); names are read-only there."""

from accounts.tests.test_admin import staff_client  # noqa: F401  (the fixture)
from agents.models import Host, Operation
from proxy.models import ProxyHost


def test_staff_designate_a_proxy_host_and_it_is_synced(staff_client):  # noqa: F811
    host = Host.objects.create(name="edge1", ssh_address="fd00::9", underlay_address="fd00:1::9")
    assert staff_client.get("/admin/proxy/proxyhost/add/").status_code == 200
    response = staff_client.post("/admin/proxy/proxyhost/add/", {
        "host": host.pk, "public_ipv4": "192.0.2.80", "bind_ipv4": "0.0.0.0", "jump_port": 2222, "is_active": "on"})
    assert response.status_code == 302, response.content.decode()[:2000]
    proxy_host = ProxyHost.objects.get()
    assert Operation.objects.filter(kind="proxy.sync", target_uuid=proxy_host.uuid, host=host).count() == 1
    bad = staff_client.post("/admin/proxy/proxyhost/add/", {
        "host": host.pk, "public_ipv4": "2001:db8::1", "bind_ipv4": "0.0.0.0", "jump_port": 0})
    assert bad.status_code == 200 and ProxyHost.objects.count() == 1  # the form says what is wrong
    assert staff_client.get("/admin/proxy/domainname/").status_code == 200
    assert staff_client.get("/admin/proxy/domainname/add/").status_code == 403
