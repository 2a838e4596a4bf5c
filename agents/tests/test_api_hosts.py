"""Host status through the API goes through agents/actions.py like the admin's: an audit row per change,
only the transitions the actions allow, and nothing half-saved when one is refused."""

from accounts.models import AuditEntry
from agents.choices import HostStatus
from agents.models import Host


def _host(status=HostStatus.ENABLED):
    return Host.objects.create(name="hv9", ssh_address="hv9.example", cores=8, memory_mib=8192, disk_gib=100,
                               status=status)


def test_staff_drain_and_enable_a_host_with_an_audit_row_each(staff, client_for):
    host = _host()
    admin = client_for(staff)
    assert admin.patch(f"/api/v1/hosts/{host.uuid}/", {"status": "draining"}, format="json").status_code == 200
    assert admin.patch(f"/api/v1/hosts/{host.uuid}/", {"status": "enabled"}, format="json").status_code == 200
    host.refresh_from_db()
    assert host.status == HostStatus.ENABLED
    assert list(AuditEntry.objects.filter(target_uuid=host.uuid).order_by("id").values_list("action", flat=True)) == [
        "host.drain", "host.enable"]


def test_maintenance_is_reached_only_by_a_drain_and_a_refusal_saves_nothing(staff, client_for):
    host = _host()
    admin = client_for(staff)
    answer = admin.patch(f"/api/v1/hosts/{host.uuid}/", {"status": "maintenance", "cores": 64}, format="json")
    assert answer.status_code == 409 and "maintenance/" in answer.json()["detail"]
    host.refresh_from_db()
    assert (host.status, host.cores) == (HostStatus.ENABLED, 8)
    assert not AuditEntry.objects.filter(target_uuid=host.uuid).exists()


def test_a_transition_the_actions_do_not_allow_is_409(staff, client_for):
    host = _host(HostStatus.MAINTENANCE)
    answer = client_for(staff).patch(f"/api/v1/hosts/{host.uuid}/", {"status": "draining"}, format="json")
    assert answer.status_code == 409
    host.refresh_from_db()
    assert host.status == HostStatus.MAINTENANCE


def test_customers_cannot_touch_hosts(api):
    host = _host()
    assert api["alice"].patch(f"/api/v1/hosts/{host.uuid}/", {"status": "down"}, format="json").status_code == 403
    host.refresh_from_db()
    assert host.status == HostStatus.ENABLED
