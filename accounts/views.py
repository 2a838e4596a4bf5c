"""Portal pages of accounts: login with a second factor, sign-up, the account, tokens, projects, audit."""

import base64
import io
import time
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth import login as auth_login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.tokens import PasswordResetTokenGenerator
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.paginator import Paginator
from django.http import Http404, HttpResponseForbidden
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse, reverse_lazy
from django.utils.encoding import force_bytes
from django.utils.http import url_has_allowed_host_and_scheme, urlsafe_base64_decode, urlsafe_base64_encode
from django.views.decorators.http import require_POST
from django_otp import login as otp_login
from django_otp import user_has_device

from accounts import actions
from accounts.errors import Conflict
from accounts.forms import InviteForm, LoginForm, OTPCodeForm, ProjectForm, SignupForm, TokenForm
from accounts.models import APIToken, AuditEntry, Invitation
from accounts.notify import send_invitation_mail
from accounts.otp import match_code
from accounts.ratelimit import LimiterUnavailable, LoginLimiter, client_address, mail_allowed
from accounts.scoping import projects_of

OTP_PENDING_SESSION_KEY = "uncloud_otp_pending"
OTP_PENDING_SECONDS = 300


def _safe_next(request, fallback: str = "dashboard") -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return reverse(fallback)


def _error_text(error) -> str:
    if isinstance(error, ValidationError):
        return " ".join(error.messages)
    detail = getattr(error, "detail", None)
    return str(detail if detail is not None else error)


# --- Login: password, then (if the user enrolled one) a one-time code ---

def _check_code(request, user, code: str):
    """(device, None) for a right code, else (None, why). Wrong codes count per account and network."""
    limiter = LoginLimiter(f"otp:{user.pk}", client_address(request))
    try:
        if limiter.blocked():
            return None, limiter.message()
        device = match_code(user, code)
        if device is None:
            limiter.failed()
            return None, "That code is wrong or was used already."
    except LimiterUnavailable:
        return None, LoginLimiter.unavailable_message()
    limiter.succeeded()
    return device, None


def login_view(request):
    if request.user.is_authenticated and request.method == "GET":
        return redirect(_safe_next(request))
    form = LoginForm(request, data=request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.get_user()
        if user_has_device(user):
            request.session[OTP_PENDING_SESSION_KEY] = {
                "user": user.pk, "backend": user.backend, "at": time.time(), "next": _safe_next(request),
            }
            return redirect("login-otp")
        auth_login(request, user)
        return redirect(_safe_next(request))
    return render(request, "registration/login.html", {
        "form": form, "next": request.GET.get("next", ""), "signup_enabled": settings.UNCLOUD_SIGNUP_ENABLED,
    })


def login_otp_view(request):
    pending = request.session.get(OTP_PENDING_SESSION_KEY)
    if not pending or time.time() - pending["at"] > OTP_PENDING_SECONDS:
        request.session.pop(OTP_PENDING_SESSION_KEY, None)
        messages.error(request, "Please log in again.")
        return redirect("login")
    user = get_object_or_404(get_user_model(), pk=pending["user"], is_active=True)
    form = OTPCodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        device, error = _check_code(request, user, form.cleaned_data["code"])
        if device is None:
            form.add_error("code", error)
        else:
            del request.session[OTP_PENDING_SESSION_KEY]
            auth_login(request, user, backend=pending["backend"])
            otp_login(request, device)
            return redirect(pending["next"])
    return render(request, "registration/login_otp.html", {"form": form})


# --- Sign-up with e-mail verification, password reset ---

class EmailVerificationTokenGenerator(PasswordResetTokenGenerator):
    key_salt = "uncloud.accounts.email-verification"

    def _make_hash_value(self, user, timestamp):
        # Verifying sets Identity.email_verified, so a link works once, and never again after staff
        # deactivate the account.
        identity = getattr(user, "identity", None)
        verified = identity.email_verified if identity is not None else "legacy"
        return f"{user.pk}{user.email}{verified}{timestamp}"


email_verification_tokens = EmailVerificationTokenGenerator()


def signup_view(request):
    if not settings.UNCLOUD_SIGNUP_ENABLED:
        raise Http404("Sign-up is closed on this site.")
    if request.method == "POST":
        actions.do_expire_signups()  # an abandoned sign-up holds no name or address forever
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        email = form.cleaned_data["email"]
        existing = get_user_model().objects.filter(email__iexact=email).first()
        if existing is not None:
            # The same answer as a new sign-up, so the form does not tell which addresses have accounts;
            # the owner of the address learns what happened.
            _send_limited(request, email, "Sign-up attempt on uncloud",
                          f"Someone (perhaps you) tried to sign up on uncloud with this address, which already "
                          f"has an account. Log in, or reset your password here: "
                          f"{request.build_absolute_uri(reverse('password-reset'))}\n\n"
                          "If it was not you, ignore this mail.\n")
            return render(request, "registration/signup_done.html", {"email": email})
        user = actions.do_create_user(
            form.cleaned_data["username"], form.cleaned_data["password1"], email=email, is_active=False,
        )
        link = request.build_absolute_uri(reverse("signup-verify", args=[
            urlsafe_base64_encode(force_bytes(user.pk)), email_verification_tokens.make_token(user),
        ]))
        next_url = _safe_next(request, fallback="dashboard")
        if next_url != reverse("dashboard"):
            link += "?" + urlencode({"next": next_url})
        _send_limited(request, user.email, "Verify your e-mail address for uncloud",
                      f"Hello {user.username},\n\nfollow this link to activate your uncloud account:\n\n{link}\n\n"
                      f"It works for {settings.PASSWORD_RESET_TIMEOUT // 86400} days. If you did not sign up, "
                      "ignore this mail.\n")
        return render(request, "registration/signup_done.html", {"email": user.email})
    return render(request, "registration/signup.html", {"form": form, "next": request.GET.get("next", "")})


def _send_limited(request, recipient: str, subject: str, body: str) -> None:
    if mail_allowed(recipient, client_address(request)):
        send_mail(subject, body, None, [recipient])


def signup_verify_view(request, uidb64, token):
    if not settings.UNCLOUD_SIGNUP_ENABLED:
        raise Http404("Sign-up is closed on this site.")  # links mailed before it closed die with it
    try:
        user = get_user_model().objects.get(pk=int(urlsafe_base64_decode(uidb64).decode()))
    except (ValueError, TypeError, OverflowError, get_user_model().DoesNotExist):
        user = None
    if user is None or not email_verification_tokens.check_token(user, token):
        return render(request, "registration/signup_invalid.html", status=400)
    # The link proves the mailbox, nothing more: it neither logs in nor re-activates an account
    # staff deactivated (do_verify_signup_email only activates a never-verified sign-up).
    actions.do_verify_signup_email(user)
    messages.success(request, "Your e-mail address is verified. Log in to start.")
    return redirect(f"{reverse('login')}?{urlencode({'next': _safe_next(request)})}")


class PasswordResetView(auth_views.PasswordResetView):
    template_name = "registration/password_reset_form.html"
    email_template_name = "registration/password_reset_email.txt"
    subject_template_name = "registration/password_reset_subject.txt"
    success_url = reverse_lazy("password-reset-done")

    def form_valid(self, form):
        if not mail_allowed(form.cleaned_data["email"], client_address(self.request)):
            return redirect(self.success_url)  # the same page as when a mail went out
        return super().form_valid(form)


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "registration/password_reset_confirm.html"
    success_url = reverse_lazy("password-reset-complete")

    def form_valid(self, form):
        actions.do_set_password(self.user, self.user, form.cleaned_data["new_password1"], reason="reset")
        del self.request.session[auth_views.INTERNAL_RESET_SESSION_TOKEN]
        return redirect(self.success_url)


# --- The account: second factor and API tokens ---

@login_required
def account_view(request):
    return render(request, "accounts/account.html", {
        "has_otp": user_has_device(request.user),
        "projects": projects_of(request.user).select_related("owner"),
        "ldap_user": not request.user.has_usable_password(),
    })


def _qr_data_uri(text: str) -> str:
    import qrcode
    import qrcode.image.svg

    buffer = io.BytesIO()
    qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage).save(buffer)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()


@login_required
def otp_view(request):
    """Enrol an authenticator (QR code), or enter a code if this session has not passed one yet."""
    from django_otp.plugins.otp_static.models import StaticToken

    user = request.user
    form = OTPCodeForm(request.POST or None)
    if user_has_device(user) and not user.is_verified():
        # Enrolled, but this session never passed a code (e.g. staff sent here by the middleware).
        if request.method == "POST" and form.is_valid():
            device, error = _check_code(request, user, form.cleaned_data["code"])
            if device is not None:
                otp_login(request, device)
                request.session.cycle_key()  # a session that passed the second factor gets a new id
                return redirect(_safe_next(request, fallback="otp"))
            form.add_error("code", error)
        return render(request, "accounts/otp_verify.html", {"form": form, "next": request.GET.get("next", "")})

    enrolling = request.method == "POST" and request.POST.get("step") == "confirm"
    if user_has_device(user) and not enrolling and request.GET.get("renew") != "1":
        backup_left = StaticToken.objects.filter(device__user=user, device__confirmed=True).count()
        return render(request, "accounts/otp_manage.html", {"backup_left": backup_left})

    # Only this page starts an enrolment, and it keeps showing the same pending key until that is
    # confirmed or expires (actions.do_start_totp_enrolment).
    device = actions.do_start_totp_enrolment(user)
    if request.method == "POST" and enrolling and form.is_valid():
        codes = actions.do_confirm_totp(user, device, form.cleaned_data["code"])
        if codes is not None:
            device.refresh_from_db()
            otp_login(request, device)
            request.session.cycle_key()  # a session that passed the second factor gets a new id
            messages.success(request, "Two-factor authentication is on.")
            return render(request, "accounts/otp_backup_codes.html", {"codes": codes})
        form.add_error("code", "That code does not match; check the clock of your phone and try again.")
    secret = base64.b32encode(device.bin_key).decode()
    return render(request, "accounts/otp_enrol.html", {
        "form": form, "qr": _qr_data_uri(device.config_url), "secret": secret,
        "next": request.GET.get("next", ""), "staff_required": user.is_staff,
    })


def _require_verified(request):
    if not request.user.is_verified():
        messages.error(request, "Confirm it is you with your second factor first.")
        return redirect(f"{reverse('otp')}?{urlencode({'next': request.path})}")
    return None


@login_required
@require_POST
def otp_backup_codes_view(request):
    if (response := _require_verified(request)) is not None:
        return response
    codes = actions.do_regenerate_backup_codes(request.user)
    return render(request, "accounts/otp_backup_codes.html", {"codes": codes})


@login_required
@require_POST
def otp_remove_view(request):
    if (response := _require_verified(request)) is not None:
        return response
    try:
        actions.do_remove_otp(request.user, request.user)
    except Conflict as error:
        messages.error(request, str(error))
        return redirect("otp")
    messages.success(request, "Two-factor authentication is off. API tokens cannot be created until you turn it on.")
    return redirect("account")


@login_required
def tokens_view(request):
    verified = request.user.is_verified()
    form = TokenForm(request.POST or None)
    new_token = None
    if request.method == "POST":
        if not verified:
            return HttpResponseForbidden("Creating API tokens needs a session that passed a one-time code.")
        if form.is_valid():
            try:
                token, raw = actions.do_create_token(
                    request.user, form.cleaned_data["name"], expires=form.expires(), scope=form.cleaned_data["scope"]
                )
            except ValidationError as error:
                form.add_error(None, _error_text(error))
            else:
                new_token = {"token": token, "raw": raw}
                form = TokenForm()
    tokens = APIToken.objects.filter(user=request.user)
    return render(request, "accounts/tokens.html", {
        "form": form, "tokens": tokens, "new_token": new_token, "verified": verified,
        "has_otp": user_has_device(request.user),
    })


@login_required
@require_POST
def token_revoke_view(request, uuid):
    token = get_object_or_404(APIToken, uuid=uuid, user=request.user)
    actions.do_revoke_token(request.user, token)
    messages.success(request, f"Token {token.name} is revoked.")
    return redirect("tokens")


# --- Projects: members, invitations, quotas, audit log ---

def _project_for(request, uuid):
    """A project of the user's, or 404 (a stranger cannot tell it exists)."""
    return get_object_or_404(projects_of(request.user).select_related("owner"), uuid=uuid)


@login_required
def projects_view(request):
    form = ProjectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            project = actions.do_create_project(request.user, form.cleaned_data["name"])
        except Conflict as error:
            form.add_error("name", str(error))
        else:
            messages.success(request, f"Project {project.name} created.")
            return redirect("project", uuid=project.uuid)
    projects = projects_of(request.user).select_related("owner").prefetch_related("members")
    return render(request, "accounts/projects.html", {
        "projects": projects, "form": form, "invitations": actions.invitations_for(request.user),
    })


@login_required
def project_view(request, uuid):
    project = _project_for(request, uuid)
    is_owner = project.owner_id == request.user.id
    form = InviteForm(request.POST or None)
    if request.method == "POST":
        if not is_owner:
            return HttpResponseForbidden("Only the project's owner invites members.")
        if form.is_valid():
            _invite(request, project, form)
            if not form.errors:
                return redirect("project", uuid=project.uuid)
    return render(request, "accounts/project.html", {
        "project": project, "is_owner": is_owner, "form": form,
        "members": project.members.order_by("username"),
        "invitations": [i for i in project.invitations.filter(accepted__isnull=True) if i.is_open] if is_owner else [],
    })


def _invite(request, project, form):
    who = form.cleaned_data["who"].strip()
    try:
        invitation, raw = actions.do_invite(request.user, project, **({"email": who} if "@" in who else
                                                                     {"username": who}))
    except (Conflict, ValidationError) as error:
        form.add_error("who", _error_text(error))
        return
    send_invitation_mail(request, invitation, raw)
    # The same words whether the name exists or not.
    messages.success(request, f"Invitation for {invitation.invitee} recorded. They join once they accept it "
                              f"(within {actions.INVITATION_DAYS} days).")


@login_required
@require_POST
def project_remove_member_view(request, uuid, username):
    project = _project_for(request, uuid)
    member = get_object_or_404(project.members.all(), username=username)
    if member != request.user and project.owner_id != request.user.id:
        return HttpResponseForbidden("Only the project's owner removes other members.")
    actions.do_remove_member(request.user, project, member)
    if member == request.user:
        messages.success(request, f"You left {project.name}.")
        return redirect("projects")
    messages.success(request, f"{member.username} was removed.")
    return redirect("project", uuid=project.uuid)


@login_required
@require_POST
def invitation_cancel_view(request, uuid, invitation_uuid):
    project = _project_for(request, uuid)
    if project.owner_id != request.user.id:
        return HttpResponseForbidden("Only the project's owner manages invitations.")
    invitation = get_object_or_404(Invitation, project=project, uuid=invitation_uuid)
    actions.do_cancel_invitation(request.user, invitation)
    return redirect("project", uuid=project.uuid)


def invitation_view(request, key):
    """The mailed link: shows the invitation to the invited account only, which may accept or decline."""
    if not request.user.is_authenticated:
        messages.info(request, "Log in or sign up to accept the invitation.")
        return render(request, "accounts/invitation_anonymous.html", {"next": request.path})
    invitation = actions.invitation_by_key(key)
    mine = invitation is not None and actions.invitations_for(request.user).filter(pk=invitation.pk).exists()
    if not mine:
        messages.error(request, "This invitation is not open for your account: it may be used, expired or for "
                                "someone else. Log in as the invited account, or ask for a new one.")
        return redirect("projects")
    return render(request, "accounts/invitation.html", {"invitation": invitation})


@login_required
@require_POST
def invitation_answer_view(request, invitation_uuid, answer):
    if answer not in ("accept", "decline"):
        raise Http404
    invitation = get_object_or_404(actions.invitations_for(request.user), uuid=invitation_uuid)
    if answer == "accept":
        try:
            project = actions.do_accept_invitation(request.user, invitation)
        except actions.InvitationNotFound:
            raise Http404
        messages.success(request, f"You joined {project.name}.")
        return redirect("project", uuid=project.uuid)
    actions.do_decline_invitation(request.user, invitation)
    messages.success(request, f"You declined the invitation to {invitation.project.name}.")
    return redirect("projects")


@login_required
def project_audit_view(request, uuid):
    project = _project_for(request, uuid)
    entries = AuditEntry.objects.filter(project=project).select_related("actor")
    page = Paginator(entries, 50).get_page(request.GET.get("page"))
    return render(request, "accounts/audit.html", {"project": project, "page": page})
