"""Mails accounts send. Callers give the request so links point at the address the user came from."""

from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.urls import reverse

from accounts.actions import INVITATION_DAYS
from accounts.ratelimit import client_address, mail_allowed


def send_invitation_mail(request, invitation, raw_key: str) -> None:
    """Mail the invitee (the invited address, or the invited user's own address). Called after the
    invitation is committed. Nobody is told whether a mail went out: for an unknown username, none does."""
    if invitation.email:
        recipient = invitation.email
    else:
        user = get_user_model().objects.filter(username__iexact=invitation.username, is_active=True).first()
        recipient = user.email if user is not None else ""
    if not recipient or not mail_allowed(recipient, client_address(request)):
        return
    link = request.build_absolute_uri(reverse("invitation", args=[raw_key]))
    inviter = request.user.username
    project = invitation.project.name
    send_mail(
        f"Invitation to the uncloud project {project}",
        f"{inviter} invites you to the project {project!r} on uncloud.\n\n"
        f"Log in (or sign up with this address) and accept it here:\n\n{link}\n\n"
        f"Only the invited account can accept it. The invitation is open for {INVITATION_DAYS} days; "
        "you also find it on your Projects page.\n",
        None, [recipient],
    )
