"""A whole control plane on the lab for fault tests: `cloud()` starts a worker, beat and the host
watcher on the lab's hosts; what VMs a test leaves are deleted afterwards, and the end state is
checked (tests/lab/invariants.py). Loaded by the root conftest."""

import contextlib
import time

import pytest

from accounts.errors import Conflict
from tests.lab.controlplane import demo_image, use_lab
from tests.lab.invariants import wait_until_settled
from vms.actions import do_create_vm, do_delete_vm
from vms.models import VM


class Cloud:
    """The control plane of one test: its processes, hosts, image and owner."""

    def __init__(self, lab, processes, hosts, image, owner, project):
        self.lab, self.processes, self.hosts, self.image = lab, processes, hosts, image
        self.owner, self.project = owner, project

    def create(self, name: str) -> VM:
        vm, _ = do_create_vm(self.owner, self.project, name=name, cores=1, memory_mib=128, disk_mib=1024,
                             image=self.image)
        return vm

    def settle(self, timeout=180) -> None:
        """Every VM there is (made through actions or the API) in its desired state exactly once."""
        wait_until_settled(self.lab, list(VM.objects.all()), self.processes, timeout=timeout)

    def delete_everything(self, timeout=240) -> None:
        """Delete every VM (a busy one is asked again once its operation ends), then check settled."""
        deadline = time.monotonic() + timeout
        while VM.objects.exclude(desired_state="deleted").exists():
            assert time.monotonic() < deadline, f"not deleted: {list(VM.objects.exclude(desired_state='deleted'))}"
            for vm in VM.objects.exclude(desired_state="deleted"):
                with contextlib.suppress(Conflict):
                    do_delete_vm(self.owner, vm)
            time.sleep(1)
        self.settle()


@pytest.fixture
def cloud(lab, celery_processes, settings, alice, alice_project):
    """`cloud(hosts=None, broker_url=None, **settings)`: worker, beat and host watcher on the lab's hosts (all, or
    the given lab hosts). Whatever VMs are left are deleted afterwards, checked settled."""
    made = []

    def make(hosts=None, broker_url=None, **overrides) -> Cloud:
        values, rows, _ = use_lab(lab, settings, hosts, **overrides)
        processes = celery_processes(broker_url=broker_url, **values)
        processes.worker()
        processes.beat()
        processes.watcher()
        made.append(Cloud(lab, processes, rows, demo_image(), alice, alice_project))
        return made[-1]

    yield make
    for made_cloud in made:
        made_cloud.delete_everything()
