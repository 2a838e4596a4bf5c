"""Staff in the admin: quotas (audited), host drain/disable, token revocation, VM stop."""

import pytest

from accounts.models import AuditEntry, Project
from accounts.tests.conftest import enrol_totp, login_with_otp, totp_code
from agents.choices import HostStatus
from agents.models import Host


@pytest.fixture
def staff_client(client, staff):
    device, _ = enrol_totp(staff)
    login_with_otp(client, "staff", "staff-password-1", totp_code(device, steps_ahead=1))
    return client


def _quota_form(project, **changes):
    data = {"name": project.name, "owner": project.owner.pk, "quota_vms": project.quota_vms,
            "quota_cores": project.quota_cores, "quota_memory_mib": project.quota_memory_mib,
            "quota_disk_mib": project.quota_disk_mib, "quota_ipv4": project.quota_ipv4,
            "membership_set-TOTAL_FORMS": 0, "membership_set-INITIAL_FORMS": 0}
    data.update(changes)
    return data


def test_staff_change_quota_and_it_is_audited(staff_client, staff, alice_project):
    url = f"/admin/accounts/project/{alice_project.pk}/change/"
    response = staff_client.post(url, _quota_form(alice_project, quota_cores=64))
    assert response.status_code == 302, response.content[:2000]
    alice_project.refresh_from_db()
    assert alice_project.quota_cores == 64
    entry = AuditEntry.objects.get(action="project.quota", project=alice_project)
    assert entry.actor == staff and entry.data["new"] == {"quota_cores": 64}


def test_bulk_quota_action_for_a_classroom(staff_client, staff, alice, charlie):
    projects = Project.objects.filter(owner__in=[alice, charlie])
    ids = [str(p.pk) for p in projects]
    page = staff_client.post("/admin/accounts/project/", {"action": "set_quotas", "_selected_action": ids})
    assert page.status_code == 200 and b"Set quotas" in page.content
    done = staff_client.post("/admin/accounts/project/", {"action": "set_quotas", "_selected_action": ids,
                                                          "apply": "1", "quota_vms": "3", "quota_cores": ""})
    assert done.status_code == 302
    assert {p.quota_vms for p in projects.all()} == {3}
    assert AuditEntry.objects.filter(action="project.quota").count() == 2


def test_staff_create_project_with_default_quota(staff_client, settings, charlie):
    response = staff_client.get("/admin/accounts/project/add/")
    assert response.status_code == 200
    assert response.context["adminform"].form.initial["quota_vms"] == settings.UNCLOUD_DEFAULT_QUOTA_VMS
    created = staff_client.post("/admin/accounts/project/add/", {
        **_quota_form(Project(name="group 1", owner=charlie, quota_vms=2, quota_cores=4, quota_memory_mib=4096,
                              quota_disk_mib=20480, quota_ipv4=0))})
    assert created.status_code == 302
    project = Project.objects.get(name="group 1")
    assert project.quota_vms == 2 and project.owner == charlie
    assert AuditEntry.objects.filter(action="project.create", project=project).exists()


def test_drain_and_disable_hosts(staff_client, staff):
    host = Host.objects.create(name="hv1", ssh_address="2001:db8::1")
    for action, status in [("drain_hosts", HostStatus.DRAINING), ("disable_hosts", HostStatus.DOWN),
                           ("enable_hosts", HostStatus.ENABLED)]:
        response = staff_client.post("/admin/agents/host/", {"action": action, "_selected_action": [host.pk]})
        assert response.status_code == 302
        host.refresh_from_db()
        assert host.status == status
    assert list(AuditEntry.objects.filter(actor=staff, target_uuid=host.uuid).order_by("id")
                .values_list("action", "data")) == [
        ("host.drain", {"old": "enabled", "new": "draining"}),
        ("host.disable", {"old": "draining", "new": "down"}),
        ("host.enable", {"old": "down", "new": "enabled"}),
    ]


def test_admin_lists_filter_and_search(staff_client, alice_project):
    for path in ["/admin/accounts/project/?q=alice", "/admin/accounts/apitoken/?scope__exact=read",
                 "/admin/accounts/auditentry/?action=project.create", "/admin/accounts/invitation/",
                 "/admin/vms/vm/?q=web", "/admin/agents/host/?status__exact=draining",
                 "/admin/networks/network/?q=alice", "/admin/networks/nic/",
                 "/admin/otp_totp/totpdevice/"]:
        assert staff_client.get(path).status_code == 200, path


def test_customers_never_reach_the_admin(client, alice):
    client.force_login(alice)
    assert client.get("/admin/").status_code == 302
