from datetime import timedelta

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm
from django.contrib.auth.validators import ASCIIUsernameValidator
from django.core.exceptions import ValidationError
from django.utils import timezone

from accounts.choices import TokenScope
from accounts.ratelimit import LimiterUnavailable, LoginLimiter, client_address


class LoginForm(AuthenticationForm):
    """Username and password, refused without even checking once too many attempts failed."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "Your username and password did not match. Please try again.",
    }

    def clean(self):
        username = self.data.get("username", "")
        limiter = LoginLimiter(username, client_address(self.request))
        try:
            if limiter.blocked():
                raise forms.ValidationError(limiter.message(), code="rate_limited")
            try:
                cleaned = super().clean()
            except forms.ValidationError:
                limiter.failed()
                raise
        except LimiterUnavailable:
            raise forms.ValidationError(LoginLimiter.unavailable_message(), code="unavailable")
        limiter.succeeded()
        return cleaned


class OTPCodeForm(forms.Form):
    code = forms.CharField(
        label="Code from your authenticator app (or a backup code)", max_length=16,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}),
    )


class SignupForm(UserCreationForm):
    email = forms.EmailField(help_text="We send a link to verify it before you can log in.")

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ["username", "email"]

    def clean_username(self):
        username = super().clean_username()
        # Letters that look like others (a Cyrillic а in `аdmin`) make names that impersonate: sign-up
        # takes ASCII names only (Django's ASCII username rule). Staff and the directory may differ.
        try:
            ASCIIUsernameValidator()(username)
        except ValidationError as error:
            raise forms.ValidationError(error.messages)
        from accounts.backends import DirectoryUnavailable, directory_has_user, ldap_enabled

        if ldap_enabled():
            # Names the directory owns are for its users only: a local account named like a directory
            # user (who may not have logged in yet) must never exist.
            try:
                owned = directory_has_user(username)
            except DirectoryUnavailable:
                raise forms.ValidationError("Sign-up is not possible right now; try again in a few minutes.")
            if owned:
                raise forms.ValidationError("This username is not available. Pick another one.")
        return username

    def clean_email(self):
        # A taken address is not refused here: the view answers as for a new one and tells the owner.
        return self.cleaned_data["email"].strip()


EXPIRY_CHOICES = [("", "Never"), ("7", "In 7 days"), ("30", "In 30 days"), ("90", "In 90 days"), ("365", "In a year")]


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Where you use it, e.g. 'laptop' or 'CI'.")
    scope = forms.ChoiceField(choices=TokenScope.choices, initial=TokenScope.READ, widget=forms.RadioSelect)
    expires_in_days = forms.ChoiceField(choices=EXPIRY_CHOICES, required=False, label="Expires")

    def expires(self):
        days = self.cleaned_data.get("expires_in_days")
        return timezone.now() + timedelta(days=int(days)) if days else None


class ProjectForm(forms.Form):
    name = forms.CharField(max_length=100)


class InviteForm(forms.Form):
    who = forms.CharField(
        max_length=254, label="Username or e-mail address",
        help_text="They get an invitation and join once they accept it.",
    )
