"""LDAP logins against a real slapd started for these tests."""

import pytest
from django.contrib.auth import get_user_model
from django.core import mail

from accounts import actions
from accounts.choices import UserOrigin
from accounts.errors import Conflict
from accounts.ldapconfig import ldap_settings
from accounts.models import Identity, Project
from accounts.tests import slapd as slapd_server

PEOPLE = f"ou=people,{slapd_server.SUFFIX}"
GROUPS = f"ou=groups,{slapd_server.SUFFIX}"


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    reason = slapd_server.available()
    if reason:
        pytest.skip(reason)
    server = slapd_server.Slapd(tmp_path_factory.mktemp("slapd"))
    server.start()
    try:
        server.add(f"""dn: {slapd_server.SUFFIX}
objectClass: dcObject
objectClass: organization
dc: uncloud
o: uncloud test

dn: {PEOPLE}
objectClass: organizationalUnit
ou: people

dn: {GROUPS}
objectClass: organizationalUnit
ou: groups

dn: uid=lena,{PEOPLE}
objectClass: inetOrgPerson
uid: lena
cn: Lena Lab
sn: Lab
givenName: Lena
mail: lena@uncloud.test
userPassword: {server.hash("lena-ldap-password")}

dn: uid=otto,{PEOPLE}
objectClass: inetOrgPerson
uid: otto
cn: Otto Ops
sn: Ops
mail: otto@uncloud.test
userPassword: {server.hash("otto-ldap-password")}

dn: cn=cloud-staff,{GROUPS}
objectClass: groupOfNames
cn: cloud-staff
member: uid=otto,{PEOPLE}
""")
        yield server
    finally:
        server.stop()


@pytest.fixture
def ldap_enabled(directory, settings, db):
    env = {
        "LDAP_SERVER_URI": directory.uri,
        "LDAP_BIND_DN": slapd_server.ROOT_DN,
        "LDAP_BIND_PASSWORD": slapd_server.ROOT_PASSWORD,
        "LDAP_USER_SEARCH_BASE": PEOPLE,
        "LDAP_GROUP_SEARCH_BASE": GROUPS,
        "LDAP_STAFF_GROUP": f"cn=cloud-staff,{GROUPS}",
    }
    for name, value in ldap_settings(env).items():
        setattr(settings, name, value)
    settings.AUTHENTICATION_BACKENDS = ["accounts.backends.UncloudLDAPBackend", "accounts.backends.LocalBackend"]
    return directory


def test_ldap_login_creates_the_user_with_a_project(client, ldap_enabled):
    response = client.post("/login/", {"username": "lena", "password": "lena-ldap-password"})
    assert response.status_code == 302 and response["Location"] == "/"
    user = get_user_model().objects.get(username="lena")
    assert user.email == "lena@uncloud.test" and user.first_name == "Lena"
    assert not user.is_staff and not user.has_usable_password()
    assert Project.objects.filter(owner=user).count() == 1
    assert client.get("/").status_code == 200
    client.post("/logout/")
    # A second login finds the same user and makes no second project.
    client.post("/login/", {"username": "lena", "password": "lena-ldap-password"})
    assert Project.objects.filter(owner=user).count() == 1


def test_wrong_ldap_password_fails(client, ldap_enabled):
    response = client.post("/login/", {"username": "lena", "password": "not-her-password"})
    assert response.status_code == 200 and b"did not match" in response.content
    assert client.get("/").status_code == 302
    assert not get_user_model().objects.filter(username="lena").exists()


def test_unknown_ldap_user_fails(client, ldap_enabled):
    assert client.post("/login/", {"username": "nobody", "password": "x"}).status_code == 200


def test_staff_group_makes_staff_who_must_enrol_otp(client, ldap_enabled):
    response = client.post("/login/", {"username": "otto", "password": "otto-ldap-password"})
    assert response.status_code == 302
    otto = get_user_model().objects.get(username="otto")
    assert otto.is_staff and otto.is_superuser
    assert client.get("/admin/")["Location"].startswith("/account/otp/")


def test_local_accounts_still_work_beside_ldap(client, alice, ldap_enabled):
    assert client.post("/login/", {"username": "alice", "password": "alice-password-1"}).status_code == 302


def test_ldap_settings_from_env():
    assert ldap_settings({}) == {}
    with pytest.raises(ValueError):
        ldap_settings({"LDAP_SERVER_URI": "ldap://x"})
    with pytest.raises(ValueError):
        ldap_settings({"LDAP_SERVER_URI": "ldap://x", "LDAP_USER_DN_TEMPLATE": "uid=%(user)s",
                       "LDAP_GROUP_SEARCH_BASE": "ou=g", "LDAP_GROUP_TYPE": "nonsense"})
    config = ldap_settings({"LDAP_SERVER_URI": "ldap://x", "LDAP_USER_DN_TEMPLATE": "uid=%(user)s,ou=p"})
    assert config["AUTH_LDAP_USER_DN_TEMPLATE"] == "uid=%(user)s,ou=p"


# --- Issue 23.1: a directory login never adopts a local account, nor the reverse ---

SIGNUP = {"email": "attacker@example.com", "password1": "a-long-passphrase-9", "password2": "a-long-passphrase-9"}


@pytest.mark.parametrize("name", ["otto", "OTTO", "Otto"])
def test_signup_refuses_a_name_the_directory_owns(client, ldap_enabled, name):
    # otto is in the staff group and has never logged in: signing up as him was the way to superuser.
    response = client.post("/signup/", {"username": name, **SIGNUP})
    assert response.status_code == 200 and b"not available" in response.content
    assert not get_user_model().objects.filter(username__iexact="otto").exists() and not mail.outbox
    # Other names still sign up.
    assert b"Check your mail" in client.post("/signup/", {"username": "mallory", **SIGNUP}).content


def test_signup_is_refused_while_the_directory_cannot_answer(client, ldap_enabled, settings):
    settings.AUTH_LDAP_SERVER_URI = "ldap://127.0.0.1:9/"  # nothing listens on the discard port
    response = client.post("/signup/", {"username": "otto", **SIGNUP})
    assert b"not possible right now" in response.content
    assert not get_user_model().objects.filter(username="otto").exists()


def test_directory_login_never_takes_over_a_local_account(client, ldap_enabled):
    # A local otto exists (made before LDAP was on, or by staff): the attacker knows its password.
    local = actions.do_create_user("Otto", "attacker-password-1", email="attacker@example.com")
    response = client.post("/login/", {"username": "otto", "password": "otto-ldap-password"})
    assert response.status_code == 200 and b"did not match" in response.content
    local.refresh_from_db()
    assert not local.is_staff and not local.is_superuser and local.email == "attacker@example.com"
    assert local.identity.origin == UserOrigin.LOCAL
    assert get_user_model().objects.filter(username__iexact="otto").count() == 1
    # The local password still opens only the local, powerless account.
    assert client.post("/login/", {"username": "Otto", "password": "attacker-password-1"}).status_code == 302
    assert client.get("/admin/").status_code == 302 and not get_user_model().objects.get(pk=local.pk).is_staff


def test_local_staff_keeps_flags_and_mail_when_a_directory_user_has_its_name(client, ldap_enabled):
    staff = actions.do_create_user("lena", "local-staff-password-1", email="lena-staff@hoster.example",
                                   is_staff=True)
    assert client.post("/login/", {"username": "lena", "password": "lena-ldap-password"}).status_code == 200
    staff.refresh_from_db()
    assert staff.is_staff and staff.is_superuser and staff.email == "lena-staff@hoster.example"
    assert staff.has_usable_password()


def test_directory_user_has_no_usable_local_password(client, ldap_enabled):
    assert client.post("/login/", {"username": "otto", "password": "otto-ldap-password"}).status_code == 302
    otto = get_user_model().objects.get(username="otto")
    assert otto.identity.origin == UserOrigin.DIRECTORY and otto.identity.directory_dn.startswith("uid=otto,")
    assert not otto.has_usable_password()
    with pytest.raises(Conflict):
        actions.do_set_password(otto, otto, "a-local-password-1")
    # Even a password written behind the actions' back does not open the account locally ...
    otto.set_password("a-local-password-1")
    otto.save()
    client.post("/logout/")
    assert client.post("/login/", {"username": "otto", "password": "a-local-password-1"}).status_code == 200
    # ... and the next directory login makes it unusable again.
    assert client.post("/login/", {"username": "otto", "password": "otto-ldap-password"}).status_code == 302
    otto.refresh_from_db()
    assert not otto.has_usable_password()
    # Password reset by mail never reaches a directory user.
    client.post("/logout/")
    client.post("/password-reset/", {"email": "otto@uncloud.test"})
    assert not mail.outbox


def test_the_attack_of_issue_23_fails_end_to_end(client, ldap_enabled, settings):
    """Sign up as a staff directory user who never logged in, then wait for him: no way to superuser."""
    client.post("/signup/", {"username": "otto", **SIGNUP})
    assert not get_user_model().objects.filter(username__iexact="otto").exists()
    # Even if the local account got there some other way (sign-up while LDAP was off) ...
    settings.AUTHENTICATION_BACKENDS = ["accounts.backends.LocalBackend"]
    client.post("/signup/", {"username": "otto", **SIGNUP})
    attacker = get_user_model().objects.get(username="otto")
    assert attacker.identity.origin == UserOrigin.LOCAL
    settings.AUTHENTICATION_BACKENDS = ["accounts.backends.UncloudLDAPBackend", "accounts.backends.LocalBackend"]
    actions.do_verify_signup_email(attacker)
    # ... the real otto's directory login does not adopt it, so it never becomes staff.
    client.post("/login/", {"username": "otto", "password": "otto-ldap-password"})
    attacker.refresh_from_db()
    assert not attacker.is_staff and not attacker.is_superuser and attacker.has_usable_password()
    assert Identity.objects.get(user=attacker).origin == UserOrigin.LOCAL


def test_admin_shows_origin_and_sets_no_password_for_directory_users(client, ldap_enabled, verified_client, staff):
    client.post("/login/", {"username": "otto", "password": "otto-ldap-password"})
    client.post("/logout/")
    otto = get_user_model().objects.get(username="otto")
    admin = verified_client(staff, "staff-password-1")
    listing = admin.get("/admin/auth/user/")
    assert listing.status_code == 200 and b"Directory (LDAP)" in listing.content
    refused = admin.post(f"/admin/auth/user/{otto.pk}/password/",
                         {"password1": "a-local-password-1", "password2": "a-local-password-1"})
    assert refused.status_code == 302
    otto.refresh_from_db()
    assert not otto.has_usable_password()
