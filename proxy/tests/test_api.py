"""Domain names through the API: alice owns, bob is a member, charlie a stranger (and a customer of his
own who would like alice's name). No host is involved: proofs stay queued; the lab test drives them."""

import http.server
import threading

import pytest

from agents.models import Host, Operation
from billing.models import Order
from proxy.challenge import ChallengeFailed, fetch_challenge
from proxy.choices import DomainStatus
from proxy.models import DomainName, ProxyHost
from proxy.specs import proxy_host_specs
from tests.lab.controlplane import public_network
from vms.actions import do_create_vm, do_delete_vm, do_stop_vm
from vms.models import SSHKey

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPcJ5Zc7o0Ew2aYbnHn4mGVqhD5g0u2n0aGZL7c0Tq2X alice@laptop"


def make_vm(user, project, name):
    vm, _ = do_create_vm(user, project, name=name, cores=1, memory_mib=512, disk_mib=1024,
                         networks=[public_network()])
    do_stop_vm(user, vm)  # it never got a host: the create is cancelled and the VM is stopped
    vm.refresh_from_db()
    return vm


@pytest.fixture
def alice_vm(alice, alice_project):
    return make_vm(alice, alice_project, "web")


@pytest.fixture
def charlie_vm(charlie):
    from accounts.models import Project

    return make_vm(charlie, Project.objects.get(owner=charlie), "mine")


@pytest.fixture
def proxy_host(db):
    host = Host.objects.create(name="proxy1", ssh_address="fd00::7", underlay_address="fd00:1::7")
    return ProxyHost.objects.create(host=host, public_ipv4="192.0.2.80")


def test_domain_crud_tenancy_uniqueness_and_order(api, alice_vm, alice_project, charlie_vm, proxy_host):
    created = api["bob"].post("/api/v1/domains/", {"name": "WWW.Example.org.", "vm": str(alice_vm.uuid),
                                                   "project": str(alice_project.uuid)}, format="json")
    assert created.status_code == 201, created.json()
    domain = created.json()
    assert domain["name"] == "www.example.org" and domain["status"] == "pending"
    assert domain["challenge_url"] == f"http://www.example.org/.well-known/uncloud-challenge/{domain['proof_token']}"
    assert domain["proxy_addresses"] == ["192.0.2.80"]
    assert Operation.objects.filter(kind="domain.prove", target_uuid=domain["uuid"]).count() == 1
    assert Order.objects.get(resource_uuid=domain["uuid"], ends_at__isnull=True).product.code == "proxy-name"

    url = f"/api/v1/domains/{domain['uuid']}/"
    assert api["alice"].get(url).status_code == 200
    assert api["charlie"].get(url).status_code == 404
    assert api["charlie"].patch(url, {"proxy_protocol": True}, format="json").status_code == 404
    assert api["charlie"].delete(url).status_code == 404
    assert api["charlie"].post(f"{url}verify/").status_code == 404
    assert api["charlie"].get("/api/v1/domains/").json()["results"] == []
    # Another customer cannot claim it, in any spelling; nor can anybody point a name at a stranger's VM.
    for spelling in ("www.example.org", "WWW.EXAMPLE.ORG"):
        taken = api["charlie"].post("/api/v1/domains/", {"name": spelling, "vm": str(charlie_vm.uuid)}, format="json")
        assert taken.status_code == 409 and taken.json()["detail"] == "This name is taken."
    foreign = api["charlie"].post("/api/v1/domains/", {"name": "c.example.org", "vm": str(alice_vm.uuid)},
                                  format="json")
    assert foreign.status_code == 400 and "vm" in foreign.json()

    changed = api["alice"].patch(url, {"proxy_protocol": True}, format="json")
    assert changed.status_code == 200 and changed.json()["proxy_protocol"] is True
    assert api["alice"].post(f"{url}verify/").status_code == 409  # its first proof is still queued
    assert api["alice"].delete(url).status_code == 204
    assert Order.objects.get(resource_uuid=domain["uuid"]).ends_at is not None
    assert not DomainName.objects.exists()


@pytest.mark.parametrize("name", ["", "localhost", "a..b.org", "-x.example.org", "x_y.example.org",
                                  "*.example.org", "192.0.2.1", "x" * 64 + ".org", "a b.org", "exa\nmple.org"])
def test_bad_names_are_400_and_leave_nothing(api, alice_vm, name):
    response = api["alice"].post("/api/v1/domains/", {"name": name, "vm": str(alice_vm.uuid)}, format="json")
    assert response.status_code == 400 and "name" in response.json()
    assert not DomainName.objects.exists() and not Order.objects.filter(resource_kind="domain").exists()


def test_international_names_are_stored_as_punycode(api, alice_vm):
    response = api["alice"].post("/api/v1/domains/", {"name": "Bücher.example", "vm": str(alice_vm.uuid)},
                                 format="json")
    assert response.status_code == 201 and response.json()["name"] == "xn--bcher-kva.example"


def test_names_per_project_are_limited(api, alice_vm, settings):
    settings.UNCLOUD_PROXY_NAMES_PER_PROJECT = 1
    assert api["alice"].post("/api/v1/domains/", {"name": "a.example.org", "vm": str(alice_vm.uuid)},
                             format="json").status_code == 201
    over = api["alice"].post("/api/v1/domains/", {"name": "b.example.org", "vm": str(alice_vm.uuid)}, format="json")
    assert over.status_code == 409 and DomainName.objects.count() == 1


def test_deleting_the_vm_takes_its_names_and_ends_their_orders(alice, api, alice_vm):
    domain = api["alice"].post("/api/v1/domains/", {"name": "a.example.org", "vm": str(alice_vm.uuid)},
                               format="json").json()
    do_delete_vm(alice, alice_vm)
    assert not DomainName.objects.exists()
    assert Order.objects.get(resource_uuid=domain["uuid"]).ends_at is not None


def test_proxy_host_spec_serves_proven_names_only_and_jumps_to_own_vms(api, alice, alice_vm, alice_project,
                                                                         charlie_vm, proxy_host):
    SSHKey.objects.create(project=alice_project, name="laptop", public_key=KEY, key_type="ssh-ed25519",
                          fingerprint="SHA256:x")
    for name in ("proven.example.org", "pending.example.org", "failed.example.org"):
        api["alice"].post("/api/v1/domains/", {"name": name, "vm": str(alice_vm.uuid)}, format="json")
    DomainName.objects.filter(name="proven.example.org").update(status=DomainStatus.PROVEN)
    DomainName.objects.filter(name="failed.example.org").update(status=DomainStatus.FAILED)
    proxy, jump = (call["spec"] for call in proxy_host_specs(proxy_host))
    address = alice_vm.nics.get().ipv6_address
    assert [(entry["name"], entry["serve"], entry["ipv6"]) for entry in proxy["names"]] == [
        ("pending.example.org", "challenge", address), ("proven.example.org", "all", address)]
    # Only alice's key, only to alice's VM: charlie's VM (no key of alice's project) is not reachable.
    assert jump["keys"] == [{"key": KEY, "permit": [address]}]
    assert charlie_vm.nics.get().ipv6_address not in str(jump)
    assert jump["user"] == "uncloud-jump" and jump["listen"] == ["0.0.0.0"]


class ChallengeAnswer(http.server.BaseHTTPRequestHandler):
    answers = {}

    def do_GET(self):
        body = self.answers.get((self.headers["Host"], self.path))
        self.send_response(200 if body else 404)
        self.end_headers()
        self.wfile.write((body or "no").encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def challenge_server(settings):
    """A real HTTP server standing in for the proxy (the lab test fetches through HAProxy itself)."""
    server = http.server.HTTPServer(("127.0.0.1", 0), ChallengeAnswer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.UNCLOUD_PROXY_CHALLENGE_ADDRESS = f"127.0.0.1:{server.server_address[1]}"
    yield ChallengeAnswer.answers
    server.shutdown()
    server.server_close()
    ChallengeAnswer.answers.clear()


def test_the_challenge_must_answer_the_token_for_that_name(challenge_server):
    challenge_server[("a.example.org", "/.well-known/uncloud-challenge/t1")] = "t1\n"
    fetch_challenge("a.example.org", "/.well-known/uncloud-challenge/t1", "t1", [])
    with pytest.raises(ChallengeFailed, match="answered 404"):
        fetch_challenge("b.example.org", "/.well-known/uncloud-challenge/t1", "t1", [])
    challenge_server[("a.example.org", "/.well-known/uncloud-challenge/t2")] = "something else"
    with pytest.raises(ChallengeFailed, match="not the token"):
        fetch_challenge("a.example.org", "/.well-known/uncloud-challenge/t2", "t2", [])


def test_without_a_challenge_address_the_name_must_point_at_the_proxy(db):
    with pytest.raises(ChallengeFailed, match="not at the proxy"):
        fetch_challenge("localhost", "/.well-known/uncloud-challenge/t", "t", ["192.0.2.80"])


def test_beat_resyncs_every_proxy_host_once_while_a_sync_is_queued(proxy_host):
    from proxy.tasks import sync_all

    sync_all()
    sync_all()  # the first sync has not read the state yet: no second one
    assert Operation.objects.filter(kind="proxy.sync", target_uuid=proxy_host.uuid).count() == 1


def test_a_wrong_answer_is_retried_then_the_name_fails_with_what_was_seen(api, alice_vm, proxy_host,
                                                                          challenge_server):
    from agents.operations import TransientStepError
    from proxy.workflows import prove_failed, step_challenge

    created = api["alice"].post("/api/v1/domains/", {"name": "a.example.org", "vm": str(alice_vm.uuid)},
                                format="json").json()
    operation = Operation.objects.get(kind="domain.prove", target_uuid=created["uuid"])
    with pytest.raises(TransientStepError, match="answered 404"):
        step_challenge(operation)  # the engine retries a transient error with backoff
    operation.error = "Gave up after 5 attempts: http://a.example.org/... answered 404 'no', not the token."
    prove_failed(operation)
    domain = DomainName.objects.get(uuid=created["uuid"])
    assert domain.status == DomainStatus.FAILED and "answered 404" in domain.status_message
    assert Operation.objects.filter(kind="proxy.sync", target_uuid=proxy_host.uuid).exists()  # route withdrawn

    domain.status = DomainStatus.PENDING
    domain.save()
    challenge_server[("a.example.org", domain.challenge_path)] = domain.proof_token
    assert step_challenge(operation) == {"proven": "a.example.org"}
    domain.refresh_from_db()
    assert domain.status == DomainStatus.PROVEN and domain.proven_at is not None
