"""IPv4 visitors of IPv6-only VMs through the shared proxy, on real lab hosts with a real worker:

- hv1 is the proxy host (HAProxy and the jump sshd, set up by the host program); an IPv4-only client
  namespace behind it plays a visitor on the IPv4 internet.
- alice's VM "web" (the demo guest, on hv2: the proxy reaches it over the underlay, as a proxy host
  reaches most guests) is the customer's web server: the test types at its
  console (QMP keys on tty1, as a customer would) to put the challenge file in place and start
  busybox httpd on port 80. Its uc.listen service on port 22 answers `UNCLOUD-HELLO web`.
- The demo guest has no TLS server, so a namespace on hv1's bridge of the public network stands in for
  alice's second VM ("tls", never booted; the namespace holds its address): openssl s_server with its own
  certificate proves that HTTPS is routed by SNI and passed through, not terminated, and its sshd is
  the target of a literal `ssh -J` (`ssh -W`, what -J runs, reaches the demo guest's port 22). The same
  namespace holds charlie's VM's address with a port-22 listener, so a refused jump is refused by
  the jump host's policy, not by an unreachable target.
"""

import subprocess
import time

import pytest

from agents.hosts import agent_for
from agents.hostside.uncloud_hostside.addressing import link_local_address, router_mac
from agents.operations import active_operation
from networks.models import Firewall
from networks.specs import net_up_spec
from networks.tests.test_networks_lab import guest_line, user_data
from proxy.models import DomainName, ProxyHost
from proxy.workflows import request_proxy_sync
from tests.lab.controlplane import demo_image, operations_of, use_lab, wait_for_status
from tests.lab.ipv4 import add_ipv4_client, ipv4_from_root
from tests.lab.keyboard import type_text
from tests.lab.waiting import wait_for
from vms.models import VM

pytestmark = [pytest.mark.lab, pytest.mark.worker]

PROXY_IPV4 = "203.0.113.1"
JUMP_PORT = 2222
NOT_SERVED = "No site here by that name."


def create_vm(client, image, name, project, *, stopped=False, settings=""):
    body = {"name": name, "cores": 1, "memory": "128M", "disk": "1G", "image": str(image.uuid),
            "project": str(project.uuid), "user_data": settings}
    if stopped:
        body["desired_state"] = "stopped"
    response = client.post("/api/v1/vms/", body, format="json")
    assert response.status_code == 201, response.content
    return VM.objects.get(uuid=response.json()["uuid"])


def add_key(client, tmp_path, owner):
    path = tmp_path / f"{owner}_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", owner, "-f", str(path)], check=True)
    response = client.post("/api/v1/ssh-keys/", {"name": owner, "public_key": path.with_suffix(".pub").read_text()},
                           format="json")
    assert response.status_code == 201, response.content
    return path


def wait_for_firewall(vm, processes, version):
    def applied():
        firewall = Firewall.objects.get(vm=vm)
        return firewall.version == version and firewall.is_applied
    wait_for(applied, timeout=60, log_paths=processes.logs, message=lambda: f"firewall: {Firewall.objects.get(vm=vm)}")


def stand_in_sshd(tmp_path, address, client_key):
    """A config for an sshd that lets `client_key` in as root on [address]:22."""
    host_key = tmp_path / "stand_in_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    (tmp_path / "stand_in_keys").write_text(client_key.with_suffix(".pub").read_text())
    config = tmp_path / "stand_in_sshd_config"
    config.write_text(f"ListenAddress [{address}]:22\nHostKey {host_key}\nPidFile {tmp_path / 'stand_in_sshd.pid'}\n"
                      f"AuthorizedKeysFile {tmp_path / 'stand_in_keys'}\nPermitRootLogin prohibit-password\n"
                      "PasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\n")
    return config


def wait_for_proof(client, domain, processes, timeout=240):
    """As a customer does: wait for the verdict, and prove again after a failed proof (the server may
    have come up after the proof's retries ran out: a loaded machine runs a TCG guest slowly)."""
    def decided():
        domain.refresh_from_db()
        return domain.status in ("proven", "failed") and active_operation(domain.uuid) is None
    deadline = time.monotonic() + timeout
    while True:
        wait_for(decided, timeout=max(deadline - time.monotonic(), 1), log_paths=processes.logs,
                 message=lambda: f"{domain.name}: {domain.status} {domain.status_message} {operations_of(domain)}")
        if domain.status == "proven":
            return
        assert time.monotonic() < deadline, f"{domain.name}: {domain.status_message}"
        assert client.post(f"/api/v1/domains/{domain.uuid}/verify/").status_code == 202


def test_http_by_name_https_by_sni_proofs_jump_host_and_the_vms_firewall(lab, celery_processes, settings, api,
                                                                       alice_project, charlie, tmp_path):
    from accounts.models import Project

    hv1_lab = lab.hosts[0]
    challenge_address = ipv4_from_root(lab, hv1_lab, 1)
    values, (hv1, hv2), public = use_lab(lab, settings, UNCLOUD_PROXY_CHALLENGE_ADDRESS=f"{challenge_address}:80",
                                         UNCLOUD_PROXY_JUMP_USER="nobody")
    processes = celery_processes(**values)
    processes.worker(concurrency=2)
    client = add_ipv4_client(lab, hv1_lab, gateway=PROXY_IPV4)
    servers = []
    try:
        image = demo_image()
        alice, charlie_api = api["alice"], api["charlie"]
        charlie_project = Project.objects.get(owner=charlie)
        alice_key, charlie_key = add_key(alice, tmp_path, "alice"), add_key(charlie_api, tmp_path, "charlie")
        ProxyHost.objects.create(host=hv1, public_ipv4=PROXY_IPV4, jump_port=JUMP_PORT)
        request_proxy_sync()

        # alice's web server on hv2, not on the proxy host (hv1 drains away for the placement).
        hv1.status = "draining"
        hv1.save(update_fields=["status"])
        web = create_vm(alice, image, "web", alice_project, settings=user_data("uc.listen=22"))
        tls_vm = create_vm(alice, image, "tls", alice_project, stopped=True)
        charlie_vm = create_vm(charlie_api, image, "mine", charlie_project, stopped=True)
        wait_for_status(web, "running", processes)
        assert web.host == hv2
        hv1.status = "enabled"
        hv1.save(update_fields=["status"])
        web_address = web.nics.get().ipv6_address
        firewall = f"/api/v1/vms/{web.uuid}/firewall/"
        assert alice.put(firewall, {"rules": [{"protocol": "tcp", "port_min": 22}, {"protocol": "tcp", "port_min": 80}]},
                         format="json").status_code == 202
        wait_for_firewall(web, processes, 1)

        # The stand-in for alice's "tls" VM and charlie's VM: one namespace on the public bridge of hv1.
        tls_nic, charlie_nic = tls_vm.nics.get(), charlie_vm.nics.get()
        agent_for(hv1).call("net-up", net_up_spec(public, hv1))
        stand_in = lab.add_guest_namespace(hv1_lab, f"br{public.vni}", mac=tls_nic.mac,
                                           addresses=[f"{tls_nic.ipv6_address}/64", f"{charlie_nic.ipv6_address}/64"])
        stand_in.run(["ip", "-6", "route", "replace", "default", "via", str(link_local_address(router_mac(public.vni))),
                      "dev", "eth0"])
        www = tmp_path / "www"
        (www / ".well-known" / "uncloud-challenge").mkdir(parents=True)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ed25519", "-nodes", "-days", "2", "-subj",
                        "/CN=tls.alice.test", "-keyout", str(tmp_path / "tls.key"), "-out", str(tmp_path / "tls.crt")],
                       check=True, capture_output=True)
        in_stand_in = ["ip", "netns", "exec", stand_in.netns]
        for argv in (["/usr/bin/python3", "-m", "http.server", "--bind", tls_nic.ipv6_address, "80"],
                     ["openssl", "s_server", "-accept", f"[{tls_nic.ipv6_address}]:443", "-cert",
                      str(tmp_path / "tls.crt"), "-key", str(tmp_path / "tls.key"), "-www", "-quiet"],
                     ["socat", f"TCP6-LISTEN:22,bind=[{charlie_nic.ipv6_address}],reuseaddr,fork",
                      "SYSTEM:echo CHARLIE-SSH-PORT"]):
            servers.append(subprocess.Popen([*in_stand_in, *argv], cwd=www, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL))
        # A real sshd on the "tls" VM's address (the demo guest has none): the target of a literal ssh -J.
        servers.append(subprocess.Popen([*in_stand_in, "/usr/sbin/sshd", "-D", "-f",
                                         str(stand_in_sshd(tmp_path, tls_nic.ipv6_address, alice_key))],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def http(name, path="/"):
            return client.run(["curl", "-sS", "-m", "5", "--resolve", f"{name}:80:{PROXY_IPV4}", f"http://{name}{path}"],
                              check=False).stdout

        def certificate_subject(name):
            done = client.run(["openssl", "s_client", "-connect", f"{PROXY_IPV4}:443", "-servername", name],
                              input="", timeout=20, check=False)
            return next((line for line in done.stdout.splitlines() if line.startswith("subject=")), None)

        # alice claims both names; charlie cannot take one, in any spelling.
        created = alice.post("/api/v1/domains/", {"name": "www.alice.test", "vm": str(web.uuid)}, format="json")
        assert created.status_code == 201, created.content
        www_name = DomainName.objects.get(uuid=created.json()["uuid"])
        taken = charlie_api.post("/api/v1/domains/", {"name": "WWW.alice.test", "vm": str(charlie_vm.uuid)},
                                 format="json")
        assert taken.status_code == 409, taken.content

        # Not proven yet: only the challenge path is routed, the site is not served.
        wait_for(lambda: http("www.alice.test") == NOT_SERVED, timeout=60, log_paths=processes.logs,
                 message=lambda: f"proxy answered {http('www.alice.test')!r}")
        # alice, at her VM's console, answers the challenge and starts a web server.
        guest_line(web, "UNCLOUD-READY")  # its console shells run from here on
        type_text(f"{hv2.state_dir}/vms/{web.uuid}/qmp.sock",
                  "mkdir -p /w/.well-known/uncloud-challenge\n"
                  f"echo {www_name.proof_token} > /w/.well-known/uncloud-challenge/{www_name.proof_token}\n"
                  "echo alice-site > /w/index.html\nhttpd -p 80 -h /w\n")
        wait_for_proof(alice, www_name, processes)
        wait_for(lambda: http("www.alice.test") == "alice-site\n", timeout=60, log_paths=processes.logs,
                 message=lambda: f"proxy answered {http('www.alice.test')!r}")

        tls_created = alice.post("/api/v1/domains/", {"name": "tls.alice.test", "vm": str(tls_vm.uuid)}, format="json")
        assert tls_created.status_code == 201, tls_created.content
        tls_name = DomainName.objects.get(uuid=tls_created.json()["uuid"])
        assert certificate_subject("tls.alice.test") is None  # not proven: no TLS route
        (www / ".well-known" / "uncloud-challenge" / tls_name.proof_token).write_text(tls_name.proof_token)
        wait_for_proof(alice, tls_name, processes)
        # HTTPS by SNI, passed through: the visitor sees the VM's own certificate, and its page.
        wait_for(lambda: certificate_subject("tls.alice.test") == "subject=CN = tls.alice.test", timeout=60,
                 message=lambda: f"subject {certificate_subject('tls.alice.test')!r}")
        page = client.run(["curl", "-sSk", "-m", "5", "--resolve", f"tls.alice.test:443:{PROXY_IPV4}",
                           "https://tls.alice.test/"], check=False).stdout
        assert "s_server" in page

        # The jump host: each project's keys reach port 22 of its own VMs, nothing else.
        def jump(key, target):
            done = client.run(["ssh", "-i", str(key), "-p", str(JUMP_PORT), "-o", "StrictHostKeyChecking=no",
                               "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                               "-W", f"[{target}]:22", f"nobody@{PROXY_IPV4}"], input="", timeout=30, check=False)
            return done.stdout + done.stderr

        wait_for(lambda: "UNCLOUD-HELLO web" in jump(alice_key, web_address), timeout=60,
                 log_paths=processes.logs, message=lambda: jump(alice_key, web_address))
        # As the README tells customers: ssh -J, here with the lab's addresses in a client config.
        config = tmp_path / "ssh_config"
        config.write_text(f"Host jump\n  HostName {PROXY_IPV4}\n  Port {JUMP_PORT}\n  User nobody\n"
                          f"Host *\n  IdentityFile {alice_key}\n  StrictHostKeyChecking no\n"
                          "  UserKnownHostsFile /dev/null\n  BatchMode yes\n  LogLevel ERROR\n  ConnectTimeout 5\n")
        reached = client.run(["ssh", "-F", str(config), "-J", "jump", f"root@{tls_nic.ipv6_address}", "echo",
                              "REACHED-OVER-THE-JUMP"], timeout=30, check=False)
        assert reached.stdout.strip() == "REACHED-OVER-THE-JUMP", reached.stderr
        assert "CHARLIE-SSH-PORT" in jump(charlie_key, charlie_nic.ipv6_address)
        refused = jump(alice_key, charlie_nic.ipv6_address)
        assert "CHARLIE-SSH-PORT" not in refused and "prohibited" in refused, refused
        refused = jump(charlie_key, web_address)
        assert "UNCLOUD-HELLO" not in refused and "prohibited" in refused, refused

        # The VM's firewall still decides: port 80 closed, the site is gone from IPv4 too.
        assert alice.put(firewall, {"rules": [{"protocol": "tcp", "port_min": 22}]},
                         format="json").status_code == 202
        wait_for_firewall(web, processes, 2)
        wait_for(lambda: "alice-site" not in http("www.alice.test"), timeout=30, message="still served")
        assert "UNCLOUD-HELLO web" in jump(alice_key, web_address)  # 22 is still open
    finally:
        for server in servers:
            server.kill()
            server.wait()
        client.remove()
