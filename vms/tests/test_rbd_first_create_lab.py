"""Several VMs created at once from an image that is not in Ceph yet: the first creates meet at the
import of its base image into the shared pool, from several worker processes and both lab hosts.
Before rbd_import.py the loser's qemu-img failed with `rbd create: File exists`, its create failed,
and only the reconciler started the VM later. Now one imports, the others wait for it, and every
create succeeds on its first run (no beat here: nothing would restart a failed one)."""

import json
import threading

import pytest

from images.rbd import base_name
from tests.lab.ceph import POOL
from tests.lab.controlplane import (
    apply_lab_settings,
    demo_image,
    lab_settings,
    operations_of,
    public_network,
    qemu_pids,
    register_lab_hosts,
    wait_for_status,
)
from vms.tests.test_failover_lab import create_ceph_vm, lab_ceph  # noqa: F401  (lab_ceph: the fixture)

pytestmark = [pytest.mark.lab, pytest.mark.worker]

CREATES = 4


class PoolNames:
    """Every image name `rbd ls` showed while the creates ran (the import's own names included)."""

    def __init__(self, cluster):
        self.cluster, self.seen = cluster, set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                self.seen.update(self.cluster.rbd_images())
            except Exception:  # a slow `rbd ls` on a loaded machine: the next one counts
                pass
            self.stop.wait(0.1)

    def finish(self) -> set:
        self.stop.set()
        self.thread.join(timeout=30)
        return self.seen


def test_concurrent_first_creates_of_one_image_import_it_once_and_all_run(lab, lab_ceph, celery_processes,  # noqa: F811
                                                                         settings, alice, alice_project):
    cluster, conf = lab_ceph
    values = lab_settings(lab, UNCLOUD_RBD_CEPH_CONF=str(conf), UNCLOUD_RBD_POOL=POOL)
    apply_lab_settings(settings, values)
    register_lab_hosts(lab)
    public_network()
    image = demo_image()
    processes = celery_processes(**values)
    processes.worker(concurrency=CREATES)

    names = PoolNames(cluster)
    vms = [create_ceph_vm(alice, alice_project, f"first-{index}", image) for index in range(CREATES)]
    try:
        for vm in vms:
            wait_for_status(vm, "running", processes, timeout=300)
    finally:
        seen = names.finish()
    for vm in vms:
        assert [(kind, state) for kind, state, *_ in operations_of(vm)] == [("vm.create", "succeeded")], \
            operations_of(vm)
        assert len(qemu_pids(vm)) == 1
    base = base_name(image)
    temporary = {name for name in seen if name.startswith(f"{base}.importing")}
    assert len(temporary) <= 1, f"imported more than once: {sorted(temporary)}"
    hosts = {vm.host_id for vm in vms}
    print(f"{CREATES} first creates on {len(hosts)} host(s); names seen in the pool: {sorted(seen)}")
    # Every disk is a clone of the complete image, and nothing of the import is left beside it.
    assert {name for name in cluster.rbd_images() if name.startswith(base)} == {base}
    for vm in vms:
        root = vm.disks.get()
        parent = json.loads(cluster.rbd("info", "--format", "json", f"{POOL}/disk-{root.uuid}"))["parent"]
        assert (parent["image"], parent["snapshot"]) == (base, "base")
