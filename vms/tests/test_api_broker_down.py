"""A create while the broker (Redis) is down: the VM and its operation are committed, so the
customer gets 201 (JSON, not an HTML 500), and the resumer sends the message once Redis is back."""

import socket
import uuid

import pytest
import redis
from django.conf import settings

from agents import operations
from agents.models import Operation
from tests.workers import _use_broker
from uncloud_project.celery import app as celery_app
from vms.models import VM
from vms.tests.test_api import create_vm


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nobody listens there once the probe is closed


@pytest.fixture
def broker_down():
    """The in-process enqueueing points at a port where no Redis listens; restored afterwards."""
    queue = f"uncloud-test-{uuid.uuid4().hex[:8]}"
    old_queue, old_broker = celery_app.conf.task_default_queue, celery_app.conf.broker_url
    celery_app.conf.task_default_queue = queue
    _use_broker(f"redis://127.0.0.1:{closed_port()}/0")
    yield
    celery_app.conf.task_default_queue = old_queue
    _use_broker(old_broker)
    redis.Redis.from_url(old_broker).delete(queue)


@pytest.mark.django_db(transaction=True)
def test_a_firewall_change_while_redis_is_down_is_saved_and_says_it_is_not_applied(api, broker_down):
    vm = VM.objects.get(uuid=create_vm(api["alice"]).json()["uuid"])
    VM.objects.filter(pk=vm.pk).update(status="running")
    rules = {"rules": [{"protocol": "tcp", "port_min": 22, "port_max": 22, "source": "::/0"}]}
    response = api["alice"].put(f"/api/v1/vms/{vm.uuid}/firewall/", rules, format="json")
    assert response.status_code == 202, response.content
    body = api["alice"].get(f"/api/v1/vms/{vm.uuid}/firewall/").json()
    assert len(body["rules"]) == 1 and body["applied"] is False
    assert body["error"].startswith("Saved but not applied yet")


@pytest.mark.django_db(transaction=True)
def test_a_create_while_redis_is_down_answers_201_and_the_resumer_sends_it(api):
    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        pytest.fail("this test needs Redis as the broker: use the README's test command")
    queue = f"uncloud-test-{uuid.uuid4().hex[:8]}"
    old_queue, old_broker = celery_app.conf.task_default_queue, celery_app.conf.broker_url
    celery_app.conf.task_default_queue = queue
    _use_broker(f"redis://127.0.0.1:{closed_port()}/0")
    try:
        response = create_vm(api["alice"])
        assert response.status_code == 201, response.content
        vm = VM.objects.get(uuid=response.json()["uuid"])
        operation = Operation.objects.get(target_uuid=vm.uuid)
        assert operation.state == "pending" and operation.lease_until is not None  # marked for the resumer
        assert operations.resume_stalled() == 0  # still down: nothing sent, nothing lost

        _use_broker(old_broker)
        assert operations.resume_stalled() == 1
        queued = redis.Redis.from_url(old_broker)
        assert queued.llen(queue) == 1
        queued.delete(queue)
    finally:
        celery_app.conf.task_default_queue = old_queue
        if celery_app.conf.broker_url != old_broker:
            _use_broker(old_broker)
