"""Host work never starves other hosts (agents/hostslots.py), with a real worker and lab hosts.

One host black-holes the control plane's SSH (tests/lab/failures.py) while three staff checks of it
are queued: each would hold a worker for its whole connect timeout (a check reaches even a host the
watcher no longer hears, and no watcher runs here to call it silent). With one worker slot per host
and two worker processes, one check sits in its connect and the others give their worker back, so a
create that fits only the healthy host runs while the first check's first connect is still waiting.
Without the bound both workers sit in checks and the create starts only after a connect timeout.
"""

import pytest

from accounts.actions import do_set_quota
from agents.actions import do_mark_host_draining
from agents.hosts import do_check_host
from agents.hostslots import QUEUED
from agents.models import Operation
from tests.lab.controlplane import (
    apply_lab_settings,
    demo_image,
    lab_settings,
    public_network,
    register_lab_hosts,
    wait_for_status,
)
from tests.lab.failures import cut_from_control_plane, heal
from tests.lab.waiting import wait_for
from vms.actions import do_create_vm, do_delete_vm

pytestmark = [pytest.mark.lab, pytest.mark.worker]

CONNECT_TIMEOUT_S = 120  # far longer than a create takes, even on a loaded machine


def test_a_black_holed_host_never_holds_the_workers_a_healthy_host_needs(lab, celery_processes, settings, alice,
                                                                          alice_project):
    values = lab_settings(lab, UNCLOUD_HOST_WORKER_SLOTS=1, UNCLOUD_SSH_CONNECT_TIMEOUT=CONNECT_TIMEOUT_S)
    apply_lab_settings(settings, values)
    black_holed, healthy = register_lab_hosts(lab)
    public_network()
    image = demo_image()
    do_set_quota(None, alice_project, quota_vms=10)
    do_mark_host_draining(None, black_holed)  # the create fits only the healthy host
    lab_host = next(each for each in lab.hosts if each.name == black_holed.name)
    processes = celery_processes(**values)

    cut_from_control_plane(lab_host)
    try:
        checks = [do_check_host(None, black_holed) for _ in range(3)]
        processes.worker(concurrency=2)
        first_ids = [check.pk for check in checks]
        wait_for(lambda: Operation.objects.filter(pk__in=first_ids, lease_owner=QUEUED).count() == 2, timeout=60,
                 log_paths=processes.logs, message="two checks never queued for their host")
        (connecting,) = Operation.objects.filter(pk__in=first_ids).exclude(lease_owner=QUEUED)
        assert connecting.state == "running" and connecting.attempts == 1
        queued = Operation.objects.filter(pk__in=first_ids, lease_owner=QUEUED).first()
        assert queued.error.startswith(f"Queued: host {black_holed.name} is busy with 1 other operation")

        vm, _ = do_create_vm(alice, alice_project, name="healthy-one", cores=1, memory_mib=128, disk_mib=1024,
                             image=image)
        wait_for_status(vm, "running", processes, timeout=CONNECT_TIMEOUT_S)
        vm.refresh_from_db()
        assert vm.host == healthy
        # The create did not wait for the black-holed host: its first connect is still waiting.
        connecting.refresh_from_db()
        assert (connecting.state, connecting.attempts, connecting.error) == ("running", 1, "")
        assert set(Operation.objects.filter(pk__in=first_ids).values_list("state", flat=True)) == {"running"}
    finally:
        heal(lab_host)
    # Healed: the checks end (the connect in flight finishes or retries, the queued ones follow it).
    for check in checks:
        wait_for(lambda check=check: Operation.objects.get(pk=check.pk).state in ("succeeded", "failed"),
                 timeout=CONNECT_TIMEOUT_S + 120, log_paths=processes.logs, message=f"check {check.pk} never ended")
    do_delete_vm(alice, vm)
    wait_for_status(vm, "deleted", processes)
