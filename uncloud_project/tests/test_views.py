from accounts.tests.conftest import enrol_totp, login_with_otp, totp_code


def test_login_page_and_dashboard(client, alice):
    assert client.get("/").status_code == 302
    page = client.get("/login/")
    assert page.status_code == 200 and b"Log in" in page.content
    response = client.post("/login/", {"username": "alice", "password": "alice-password-1"})
    assert response.status_code == 302
    dashboard = client.get("/")
    assert dashboard.status_code == 200
    assert b"alice&#x27;s project" in dashboard.content
    client.post("/logout/")
    assert client.get("/").status_code == 302


def test_wrong_password_is_a_form_error(client, alice):
    response = client.post("/login/", {"username": "alice", "password": "nope"})
    assert response.status_code == 200 and b"did not match" in response.content


def test_dashboard_shows_only_own_projects(client, alice, bob, charlie):
    client.force_login(charlie)
    content = client.get("/").content
    assert b"charlie&#x27;s project" in content and b"alice&#x27;s project" not in content
    client.force_login(bob)
    assert b"alice&#x27;s project" in client.get("/").content


def test_schema_and_docs(client, alice):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"openapi: 3" in schema.content and b"/api/v1/vms/" in schema.content
    assert client.get("/api/docs/").status_code == 200


def test_healthz(client, db):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_admin_login(client, staff):
    # Staff log in through the portal with their second factor; the admin has no login of its own.
    assert client.get("/admin/login/?next=/admin/")["Location"] == "/login/?next=%2Fadmin%2F"
    device, _ = enrol_totp(staff)
    login_with_otp(client, "staff", "staff-password-1", totp_code(device, steps_ahead=1))
    assert client.get("/admin/").status_code == 200
    for path in ["/admin/vms/vm/", "/admin/agents/host/", "/admin/agents/operation/", "/admin/networks/network/",
                 "/admin/networks/network/add/", "/admin/images/image/", "/admin/accounts/auditentry/"]:
        assert client.get(path).status_code == 200, path
