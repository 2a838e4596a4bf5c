"""State changes of accounts: each one is atomic and writes its audit row in the same transaction."""

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from accounts import audit
from accounts.api.exceptions import Conflict
from accounts.models import APIToken, Membership, Project, hash_token


@transaction.atomic
def do_create_user(username: str, password: str | None, *, email: str = "", is_staff: bool = False, actor=None):
    """A user with their own first project, so they can start right away."""
    User = get_user_model()
    user = User(username=username, email=email, is_staff=is_staff, is_superuser=is_staff)
    if password:
        user.set_password(password)
    else:
        user.set_unusable_password()
    user.save()
    do_create_project(user, f"{username}'s project", actor=actor or user)
    audit.record(actor, "user.create", target=None, username=username)
    return user


@transaction.atomic
def do_create_project(owner, name: str, *, actor=None) -> Project:
    if Project.objects.filter(owner=owner, name=name).exists():
        raise Conflict(f"You already have a project named {name!r}.")
    project = Project.objects.create(owner=owner, name=name)
    audit.record(actor or owner, "project.create", project=project, target=project, name=name)
    return project


@transaction.atomic
def do_rename_project(actor, project: Project, name: str) -> Project:
    if Project.objects.filter(owner=project.owner, name=name).exclude(pk=project.pk).exists():
        raise Conflict(f"The owner already has a project named {name!r}.")
    old = project.name
    project.name = name
    project.save(update_fields=["name"])
    audit.record(actor, "project.rename", project=project, target=project, old=old, new=name)
    return project


@transaction.atomic
def do_delete_project(actor, project: Project) -> None:
    audit.record(actor, "project.delete", project=None, target=project, name=project.name)
    project.delete()  # PROTECT on resources turns a non-empty project into a 409


@transaction.atomic
def do_add_member(actor, project: Project, user) -> Membership:
    if user == project.owner or Membership.objects.filter(project=project, user=user).exists():
        raise Conflict(f"{user.username} is already in this project.")
    membership = Membership.objects.create(project=project, user=user)
    audit.record(actor, "project.member_add", project=project, target=project, username=user.username)
    return membership


@transaction.atomic
def do_remove_member(actor, project: Project, user) -> None:
    deleted, _ = Membership.objects.filter(project=project, user=user).delete()
    if deleted:
        audit.record(actor, "project.member_remove", project=project, target=project, username=user.username)


@transaction.atomic
def do_create_token(user, name: str, *, expires=None) -> tuple[APIToken, str]:
    """Return the token and its raw value; the raw value is never stored or shown again."""
    raw = APIToken.generate_key()
    token = APIToken.objects.create(
        user=user, name=name, key_hash=hash_token(raw), key_prefix=raw[:10], expires=expires
    )
    audit.record(user, "token.create", target=token, name=name)
    return token, raw


@transaction.atomic
def do_revoke_token(actor, token: APIToken) -> None:
    updated = APIToken.objects.filter(pk=token.pk, revoked__isnull=True).update(revoked=timezone.now())
    if updated:
        audit.record(actor, "token.revoke", target=token, name=token.name)
