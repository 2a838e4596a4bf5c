"""The API contract, on every run: requests generated from the OpenAPI schema for every operation,
sent with alice's token; no answer may be a server error, and every answer must be one the schema
documents, with the documented content type and body (nullable fields, error bodies).

Bounded: a few examples per operation, derandomized (the same requests on every run, so a red run
is reproducible) and no example database. UNCLOUD_CONTRACT_EXAMPLES raises the count for a longer
local hunt."""

import os

import pytest
import schemathesis
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from accounts import actions as account_actions
from images.models import Disk, Image, Snapshot
from networks.actions import do_create_network, do_create_public_network
from networks.models import PrefixPool
from proxy.actions import do_create_domain
from vms import actions as vm_actions
from vms.tests.test_api import ED25519

EXAMPLES = int(os.environ.get("UNCLOUD_CONTRACT_EXAMPLES", "3"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

schema = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))
schema.app = WSGIHandler()


@pytest.fixture(autouse=True)
def keep_the_test_transaction():
    """A WSGI request closes the database connection when it ends (close_old_connections), which
    would end the test's transaction: the Django test client does without it, and so do we."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def alice_world(alice, alice_project, bob):
    """alice's project with one of everything, so lists and objects have real rows (with nulls) to show."""
    PrefixPool.objects.create(prefix="2001:db8:300::/56")
    do_create_public_network(None, "public")
    do_create_network(alice, alice_project, "backend")
    image = Image.objects.create(name="debian-12", status="available", virtual_size_bytes=2 * 1024**3)
    key = vm_actions.do_add_ssh_key(alice, alice_project, "laptop", ED25519)
    vm, _ = vm_actions.do_create_vm(alice, alice_project, name="web1", cores=1, memory_mib=512, disk_mib=4096,
                                    image=image, ssh_keys=[key])
    vm_actions.do_create_vm(alice, alice_project, name="cold", cores=1, memory_mib=512, disk_mib=4096, start=False)
    volume = Disk.objects.create(project=alice_project, name="data", role="data", size_mib=1024, status="available")
    Snapshot.objects.create(project=alice_project, disk=volume, name="snap")
    do_create_domain(alice, alice_project, vm, "www.example.org")
    _, token = account_actions.do_create_token(alice, "contract")
    return token


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
def test_every_operation_keeps_the_contract(case, alice_world):
    case.call_and_validate(headers={"Authorization": f"Bearer {alice_world}"}, checks=CHECKS)
