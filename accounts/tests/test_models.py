import pytest
from django.db import IntegrityError, transaction

from accounts import actions
from accounts.errors import Conflict
from accounts.models import APIToken, AuditEntry, Membership, Project


def test_new_user_gets_own_project_and_audit(alice):
    project = Project.objects.get(owner=alice)
    assert project.name == "alice's project"
    assert AuditEntry.objects.filter(action="project.create", project=project).exists()


def test_project_name_unique_per_owner(alice):
    with pytest.raises(Conflict):
        actions.do_create_project(alice, "alice's project")
    with pytest.raises(IntegrityError), transaction.atomic():
        Project.objects.create(owner=alice, name="alice's project")


def test_membership_unique(alice, bob, alice_project):
    with pytest.raises(Conflict):
        actions.do_add_member(alice, alice_project, bob)
    with pytest.raises(IntegrityError), transaction.atomic():
        Membership.objects.create(project=alice_project, user=bob)


def test_token_stores_only_hash(alice):
    token, raw = actions.do_create_token(alice, "ci")
    assert raw.startswith("uc_") and len(raw) > 40
    stored = APIToken.objects.get(pk=token.pk)
    assert raw not in (stored.key_hash, stored.key_prefix)
    assert stored.is_active
    actions.do_revoke_token(alice, stored)
    stored.refresh_from_db()
    assert not stored.is_active


def test_users_made_outside_the_actions_are_local(db):
    """Issue 23.1: every user knows their origin, also those made by the admin or createsuperuser."""
    from django.contrib.auth import get_user_model

    from accounts.choices import UserOrigin

    admin_made = get_user_model().objects.create_superuser("root2", "root2@example.com", "a-long-passphrase-9")
    assert admin_made.identity.origin == UserOrigin.LOCAL and admin_made.identity.email_verified is not None
    signed_up = actions.do_create_user("dora", "a-long-passphrase-9", email="d@example.com", is_active=False)
    assert signed_up.identity.origin == UserOrigin.LOCAL and signed_up.identity.email_verified is None
