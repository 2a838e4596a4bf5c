"""LDAP logins against a real slapd started for these tests."""

import pytest
from django.contrib.auth import get_user_model

from accounts.ldapconfig import ldap_settings
from accounts.models import Project
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
    settings.AUTHENTICATION_BACKENDS = ["accounts.backends.UncloudLDAPBackend",
                                        "django.contrib.auth.backends.ModelBackend"]
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
