"""Host status transitions: agents/actions.py is the only writer, each change has an audit row,
a transition from a status it may not leave changes nothing, and a host that can take VMs again
wakes the VMs waiting for room."""

import pytest

from accounts.models import AuditEntry
from accounts.tests.test_admin import staff_client  # noqa: F401  (the fixture)
from agents import actions
from agents.choices import HostStatus, OperationState
from agents.models import Host, Operation


@pytest.fixture
def host(db):
    return Host.objects.create(name="hv1", ssh_address="2001:db8::1")


def audit_of(host):
    return list(AuditEntry.objects.filter(target_uuid=host.uuid).order_by("id").values_list("action", "data"))


def test_each_transition_writes_one_audit_row(host, staff):
    assert actions.do_mark_host_draining(staff, host)
    assert actions.do_enable_host(staff, host)
    assert actions.do_mark_host_down(host, "ssh: connection refused")
    assert actions.do_mark_host_up(host)
    assert actions.do_disable_host(staff, host)
    host.refresh_from_db()
    assert host.status == HostStatus.DOWN
    assert audit_of(host) == [
        ("host.drain", {"old": "enabled", "new": "draining"}),
        ("host.enable", {"old": "draining", "new": "enabled"}),
        ("host.down", {"old": "enabled", "new": "down", "error": "ssh: connection refused"}),
        ("host.up", {"old": "down", "new": "enabled"}),
        ("host.disable", {"old": "enabled", "new": "down"}),
    ]


def test_a_transition_from_a_status_it_may_not_leave_changes_nothing(host, staff):
    assert not actions.do_mark_host_up(host)  # enabled is not down
    assert not actions.do_enable_host(staff, host)  # already enabled
    assert actions.do_mark_host_draining(staff, host)
    assert not actions.do_mark_host_down(host, "timeout")  # the reconciler never marks a drained host down
    host.refresh_from_db()
    assert host.status == HostStatus.DRAINING
    assert [action for action, _ in audit_of(host)] == ["host.drain"]


def test_a_stale_object_cannot_undo_a_newer_change(host, staff):
    """Two writers: the second works from the row, not from its own old copy."""
    stale = Host.objects.get(pk=host.pk)
    assert actions.do_mark_host_draining(staff, host)
    assert not actions.do_mark_host_up(stale)  # stale says enabled; the row says draining: no change
    host.refresh_from_db()
    assert host.status == HostStatus.DRAINING


@pytest.mark.django_db(transaction=True)
def test_enabling_a_host_wakes_the_vms_waiting_for_room(monkeypatch):
    from agents import operations

    host = Host.objects.create(name="hv1", ssh_address="2001:db8::1", status=HostStatus.DOWN)
    waiting = Operation.objects.create(kind="vm.create", state=OperationState.WAITING)
    other = Operation.objects.create(kind="image.import", state=OperationState.WAITING)
    enqueued = []
    monkeypatch.setattr(operations, "enqueue", enqueued.append)  # no broker needed: the row is the proof
    assert actions.do_enable_host(None, host)
    waiting.refresh_from_db()
    other.refresh_from_db()
    assert waiting.state == OperationState.PENDING and enqueued == [waiting.id]
    assert other.state == OperationState.WAITING


def test_status_is_read_only_in_the_admin(staff_client, host):  # noqa: F811
    page = staff_client.get(f"/admin/agents/host/{host.pk}/change/").content.decode()
    assert 'name="status"' not in page
    staff_client.post(f"/admin/agents/host/{host.pk}/change/", {
        "name": host.name, "transport": host.transport, "ssh_address": host.ssh_address, "ssh_port": 22,
        "ssh_user": "root", "state_dir": host.state_dir, "status": HostStatus.DOWN})
    host.refresh_from_db()
    assert host.status == HostStatus.ENABLED
