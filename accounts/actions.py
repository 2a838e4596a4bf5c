"""State changes of accounts: each one is atomic and writes its audit row in the same transaction."""

import secrets
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts import audit
from accounts.choices import TokenScope, UserOrigin
from accounts.errors import Conflict
from accounts.models import APIToken, Identity, Invitation, Membership, Project, hash_token, is_directory_user
from accounts.quotas import default_quota


@transaction.atomic
def do_create_user(username: str, password: str | None, *, email: str = "", is_staff: bool = False, actor=None,
                   is_active: bool = True):
    """A user with their own first project, so they can start right away."""
    User = get_user_model()
    user = User(username=username, email=email, is_staff=is_staff, is_superuser=is_staff, is_active=is_active)
    if password:
        user.set_password(password)
    else:
        user.set_unusable_password()
    user.save()
    # A sign-up is verified by its mail link; accounts staff make are trusted as they are.
    Identity.objects.update_or_create(user=user, defaults={  # accounts.signals may have made it already
        "origin": UserOrigin.LOCAL, "email_verified": timezone.now() if is_active else None})
    do_create_project(user, f"{username}'s project", actor=actor or user)
    audit.record(actor, "user.create", target=None, username=username)
    return user


@transaction.atomic
def do_create_project(owner, name: str, *, actor=None) -> Project:
    if Project.objects.filter(owner=owner, name=name).exists():
        raise Conflict(f"You already have a project named {name!r}.")
    project = Project.objects.create(owner=owner, name=name, **default_quota())
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
    """Staff (the admin) and tests add members directly; customers invite, and the invitee accepts."""
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
def do_create_token(user, name: str, *, expires=None, scope: str = TokenScope.READ_WRITE) -> tuple[APIToken, str]:
    """Return the token and its raw value; the raw value is never stored or shown again.

    Callers that face users (portal, API) check first that the user passed a second factor.
    """
    if scope not in TokenScope.values:
        raise ValidationError({"scope": f"Unknown scope {scope!r}."})
    if expires is not None and expires <= timezone.now():
        raise ValidationError({"expires": "The expiry must be in the future."})
    raw = APIToken.generate_key()
    token = APIToken.objects.create(
        user=user, name=name, key_hash=hash_token(raw), key_prefix=raw[:10], expires=expires, scope=scope
    )
    audit.record(user, "token.create", target=token, name=name, scope=scope)
    return token, raw


@transaction.atomic
def do_revoke_token(actor, token: APIToken) -> None:
    updated = APIToken.objects.filter(pk=token.pk, revoked__isnull=True).update(revoked=timezone.now())
    if updated:
        audit.record(actor, "token.revoke", target=token, name=token.name)


QUOTA_FIELDS = ("quota_vms", "quota_cores", "quota_memory_mib", "quota_disk_mib", "quota_ipv4")


@transaction.atomic
def do_set_quota(actor, project: Project, **limits) -> Project:
    """Staff change a project's quotas. Lowering below current usage stops new resources, never old ones."""
    unknown = set(limits) - set(QUOTA_FIELDS)
    if unknown:
        raise ValueError(f"unknown quota fields: {sorted(unknown)}")
    old = {name: getattr(project, name) for name in limits}
    for name, value in limits.items():
        setattr(project, name, value)
    project.full_clean(validate_unique=False, validate_constraints=False)
    project.save(update_fields=list(limits))
    audit.record(actor, "project.quota", project=project, target=project, old=old, new=limits)
    return project


# --- Accounts' life: e-mail verification, second factor, invitations ---

@transaction.atomic
def do_expire_signups() -> int:
    """Remove sign-ups whose link expired unused (never verified, never logged in), freeing their
    username and address. Returns how many."""
    from django.conf import settings

    cutoff = timezone.now() - timedelta(seconds=settings.PASSWORD_RESET_TIMEOUT)
    stale = list(get_user_model().objects.filter(
        is_active=False, last_login__isnull=True, date_joined__lt=cutoff, identity__email_verified__isnull=True,
        identity__origin=UserOrigin.LOCAL,
    ))
    for user in stale:
        audit.record(None, "user.signup_expired", username=user.username, email=user.email)
        Project.objects.filter(owner=user).delete()
        user.delete()
    return len(stale)


@transaction.atomic
def do_verify_signup_email(user) -> bool:
    """Sign-up ends when the e-mail link is followed: the address is verified and a never-verified
    sign-up becomes active. Returns False if there was nothing to do (already verified)."""
    identity, _ = Identity.objects.select_for_update().get_or_create(user=user)
    if identity.email_verified is not None:
        return False
    identity.email_verified = timezone.now()
    identity.save(update_fields=["email_verified"])
    get_user_model().objects.filter(pk=user.pk).update(is_active=True)
    user.is_active = True
    audit.record(user, "user.verify_email", email=user.email)
    return True


@transaction.atomic
def do_set_password(actor, user, password: str, *, reason: str = "change") -> None:
    if is_directory_user(user):
        # Their password lives in the directory; a local one would be a second way in.
        raise Conflict(f"{user.username} logs in through the directory; change the password there.")
    user.set_password(password)
    user.save(update_fields=["password"])
    # Every token made before a password reset dies with the old password.
    if reason == "reset":
        APIToken.objects.filter(user=user, revoked__isnull=True).update(revoked=timezone.now())
    audit.record(actor, f"user.password_{reason}", username=user.username)


@transaction.atomic
def do_revoke_all_tokens(actor, user, *, reason: str) -> int:
    revoked = APIToken.objects.filter(user=user, revoked__isnull=True).update(revoked=timezone.now())
    audit.record(actor, "token.revoke_all", username=user.username, count=revoked, reason=reason)
    return revoked


BACKUP_CODE_COUNT = 10


OTP_ENROLMENT_MINUTES = 15


@transaction.atomic
def do_start_totp_enrolment(user):
    """The user's one pending (unconfirmed) TOTP device: its secret is shown (QR code) until a first
    code confirms it. While it is younger than OTP_ENROLMENT_MINUTES the same one is returned, so a
    reload, a second tab or a browser's own requests never replace the key the user is scanning."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    get_user_model().objects.select_for_update().filter(pk=user.pk).first()  # one enrolment at a time
    fresh = timezone.now() - timedelta(minutes=OTP_ENROLMENT_MINUTES)
    pending = TOTPDevice.objects.filter(user=user, confirmed=False, created_at__gt=fresh).order_by("-id").first()
    if pending is not None:
        return pending
    TOTPDevice.objects.filter(user=user, confirmed=False).delete()
    return TOTPDevice.objects.create(user=user, name="authenticator app", confirmed=False)


@transaction.atomic
def do_confirm_totp(user, device, code: str) -> list[str] | None:
    """Confirm the device with its first code; returns fresh backup codes, or None if the code was wrong."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    device = TOTPDevice.objects.select_for_update().get(pk=device.pk, user=user, confirmed=False)
    throttle = (device.throttling_failure_count, device.throttling_failure_timestamp)
    if not device.verify_token(code.strip().replace(" ", "")):
        # A typo must not make the next right code wait (django-otp backs off on the device).
        TOTPDevice.objects.filter(pk=device.pk).update(throttling_failure_count=throttle[0],
                                                       throttling_failure_timestamp=throttle[1])
        return None
    # One authenticator per user: enrolling again replaces the old one.
    TOTPDevice.objects.filter(user=user, confirmed=True).exclude(pk=device.pk).delete()
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    audit.record(user, "otp.enrol", device="totp")
    return _new_backup_codes(user)


def _new_backup_codes(user) -> list[str]:
    from django_otp.plugins.otp_static.models import StaticDevice, StaticToken

    device, _ = StaticDevice.objects.get_or_create(user=user, name="backup codes", defaults={"confirmed": True})
    device.token_set.all().delete()
    codes = [StaticToken.random_token() for _ in range(BACKUP_CODE_COUNT)]
    StaticToken.objects.bulk_create([StaticToken(device=device, token=code) for code in codes])
    return codes


@transaction.atomic
def do_regenerate_backup_codes(user) -> list[str]:
    codes = _new_backup_codes(user)
    audit.record(user, "otp.backup_codes", count=len(codes))
    return codes


@transaction.atomic
def do_remove_otp(actor, user) -> None:
    """Staff may not drop their second factor (they must have one); customers may."""
    from django_otp.plugins.otp_static.models import StaticDevice
    from django_otp.plugins.otp_totp.models import TOTPDevice

    if user.is_staff and actor == user:
        raise Conflict("Staff accounts must keep a second factor; enrol a new authenticator instead.")
    TOTPDevice.objects.filter(user=user).delete()
    StaticDevice.objects.filter(user=user).delete()
    audit.record(actor, "otp.remove", username=user.username)


INVITATION_DAYS = 14


class InvitationNotFound(Exception):
    """No open invitation for this user there: unknown, someone else's, used or expired (one answer)."""


@transaction.atomic
def do_invite(actor, project: Project, *, username: str = "", email: str = "") -> tuple[Invitation, str]:
    """An invitation for one username or one e-mail address; returns it with its raw key (for the mail
    link, never stored). The answer is the same whether the name exists or not: an invitation for an
    unknown name simply expires, so inviting cannot be used to find out who has an account."""
    username, email = username.strip(), email.strip()
    if bool(username) == bool(email):
        raise ValidationError("Invite either a username or an e-mail address.")
    if email:
        email = get_user_model().objects.normalize_email(email)
        open_filter = {"email__iexact": email, "username": ""}
    else:
        # Members are listed on the project page already: saying so reveals nothing new.
        if project.owner.username.lower() == username.lower() or project.members.filter(
                username__iexact=username).exists():
            raise Conflict(f"{username} is already in this project.")
        open_filter = {"username__iexact": username, "email": ""}
    open_invitations = Invitation.objects.filter(project=project, accepted__isnull=True, **open_filter)
    if open_invitations.filter(expires__gt=timezone.now()).exists():
        raise Conflict(f"{username or email} already has an open invitation.")
    open_invitations.delete()  # expired ones
    raw = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        project=project, email=email, username=username, key_hash=hash_token(raw), invited_by=actor,
        expires=timezone.now() + timedelta(days=INVITATION_DAYS),
    )
    audit.record(actor, "project.invite", project=project, target=project, invitee=invitation.invitee)
    return invitation, raw


def invitations_for(user):
    """The open invitations `user` may accept: for their username, or for their e-mail address once
    that address is verified (by the sign-up link, or by the directory)."""
    from django.db.models import Q

    mine = Q(username__iexact=user.username, email="")
    identity = Identity.objects.filter(user_id=user.pk).first()
    if user.email and identity is not None and identity.email_verified is not None:
        mine |= Q(email__iexact=user.email, username="")
    return Invitation.objects.filter(mine, accepted__isnull=True, expires__gt=timezone.now()).select_related(
        "project", "invited_by")


def invitation_by_key(raw: str) -> Invitation | None:
    return Invitation.objects.select_related("project").filter(key_hash=hash_token(raw)).first()


@transaction.atomic
def do_accept_invitation(user, invitation: Invitation) -> Project:
    """The invitee joins. Raises InvitationNotFound unless `invitation` is open and meant for `user`."""
    invitation = invitations_for(user).select_for_update(of=("self",)).filter(pk=invitation.pk).first()
    if invitation is None:
        raise InvitationNotFound
    project = invitation.project
    if user != project.owner and not Membership.objects.filter(project=project, user=user).exists():
        Membership.objects.create(project=project, user=user)
    invitation.accepted = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted", "accepted_by"])
    audit.record(user, "project.invite_accept", project=project, target=project, invitee=invitation.invitee,
                 username=user.username)
    return project


@transaction.atomic
def do_decline_invitation(user, invitation: Invitation) -> None:
    invitation = invitations_for(user).filter(pk=invitation.pk).first()
    if invitation is None:
        raise InvitationNotFound
    audit.record(user, "project.invite_decline", project=invitation.project, target=invitation.project,
                 invitee=invitation.invitee)
    invitation.delete()


@transaction.atomic
def do_cancel_invitation(actor, invitation: Invitation) -> None:
    audit.record(actor, "project.invite_cancel", project=invitation.project, target=invitation.project,
                 invitee=invitation.invitee)
    invitation.delete()
