"""Fixtures every test may use: alice owns a project, bob is a member of it, charlie is a stranger."""

import pytest
from rest_framework.test import APIClient

from accounts import actions as account_actions
from accounts.models import Project

pytest_plugins = ["tests.lab.fixtures", "tests.workers", "tests.lab.provisioning_times", "tests.lab.cloud"]


@pytest.fixture
def alice(db):
    return account_actions.do_create_user("alice", "alice-password-1")


@pytest.fixture
def bob(db, alice):
    user = account_actions.do_create_user("bob", "bob-password-1")
    account_actions.do_add_member(alice, alice_project_of(alice), user)
    return user


@pytest.fixture
def charlie(db):
    return account_actions.do_create_user("charlie", "charlie-password-1")


@pytest.fixture
def staff(db):
    return account_actions.do_create_user("staff", "staff-password-1", is_staff=True)


def alice_project_of(user) -> Project:
    return Project.objects.get(owner=user)


@pytest.fixture
def alice_project(alice):
    return alice_project_of(alice)


def _client_for(user) -> APIClient:
    """An API client that authenticates like a real customer script: with a bearer token."""
    _, raw = account_actions.do_create_token(user, "tests")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def api(alice, bob, charlie):
    """API clients for alice, bob and charlie."""
    return {"alice": _client_for(alice), "bob": _client_for(bob), "charlie": _client_for(charlie)}


@pytest.fixture
def client_for(db):
    """`client_for(user)`: a token-authenticated API client for any user."""
    return _client_for


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # PBKDF2's deliberate slowness protects stored passwords, not tests: it made each test ~1 s slower.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def billing_catalogue(request):
    """Creating a VM opens its billing order, which needs the product catalogue from billing's data
    migration. A transactional test flushes every table, data migrations' rows included: seed them
    again for every test that uses the database (one query when they are there)."""
    marker = request.node.get_closest_marker("django_db")
    names = set(request.fixturenames)
    if "transactional_db" in names or (marker is not None and marker.kwargs.get("transaction")):
        request.getfixturevalue("transactional_db")
    elif "db" in names or marker is not None:
        request.getfixturevalue("db")
    else:
        return
    from billing.catalogue import ensure_catalogue

    ensure_catalogue()
