"""Who may log in how: local users with their uncloud password, directory users with their LDAP password.

The two never mix. django-auth-ldap on its own finds an existing Django user by case-insensitive
username and updates it from the directory (staff and superuser from LDAP_STAFF_GROUP): a local
sign-up named like a directory user who had not logged in yet became that user, local password
included. Here a directory login only ever finds users whose origin is the directory, the local
backend only ever accepts local users, and a directory user never keeps a usable local password.
"""

import logging

import ldap
from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.db import transaction
from django.utils import timezone
from django_auth_ldap.backend import LDAPBackend, _LDAPUser

from accounts.choices import UserOrigin
from accounts.models import Identity, Project, is_directory_user

logger = logging.getLogger(__name__)

LDAP_BACKEND = "accounts.backends.UncloudLDAPBackend"
LOCAL_BACKEND = "accounts.backends.LocalBackend"


class DirectoryUnavailable(Exception):
    """The directory could not answer; callers refuse what they would have allowed (fail closed)."""


class LocalBackend(ModelBackend):
    """Django's username/password backend for local users only."""

    def user_can_authenticate(self, user):
        return super().user_can_authenticate(user) and not is_directory_user(user)


class UncloudLDAPBackend(LDAPBackend):
    """Users from the directory; staff status follows LDAP_STAFF_GROUP on every login.

    Their password lives in the directory: Django keeps an unusable one, so password reset
    by mail never applies to them.
    """

    def get_or_build_user(self, username, ldap_user):
        user, built = super().get_or_build_user(username, ldap_user)
        if not built and not is_directory_user(user):
            # A local account has this name (any case): the directory must not adopt it, nor its
            # flags, e-mail or password. Staff rename one of the two to let the directory user in.
            logger.warning("LDAP login of %r refused: a local account %r has that name", username, user.username)
            raise ldap_user.AuthenticationFailed(f"{user.username!r} is a local account")
        return user, built

    def authenticate_ldap_user(self, ldap_user, password):
        with transaction.atomic():
            user = super().authenticate_ldap_user(ldap_user, password)
            if user is None:
                return None
            origin, created = Identity.objects.get_or_create(
                user=user, defaults={"origin": UserOrigin.DIRECTORY, "directory_dn": ldap_user.dn or "",
                                     "email_verified": timezone.now()},
            )
            if origin.origin != UserOrigin.DIRECTORY:  # get_or_build_user refused these already
                return None
            if not created and ldap_user.dn and origin.directory_dn != ldap_user.dn:
                Identity.objects.filter(pk=origin.pk).update(directory_dn=ldap_user.dn)
            if user.has_usable_password():
                user.set_unusable_password()
                user.save(update_fields=["password"])
            if not Project.objects.filter(owner=user).exists():
                from accounts import audit
                from accounts.actions import do_create_project

                audit.record(user, "user.create", username=user.username, origin=UserOrigin.DIRECTORY)
                do_create_project(user, f"{user.username}'s project", actor=user)
        return user


def ldap_enabled() -> bool:
    return bool(getattr(settings, "AUTH_LDAP_SERVER_URI", "")) and LDAP_BACKEND in settings.AUTHENTICATION_BACKENDS


def directory_has_user(username: str) -> bool:
    """True if the directory knows `username` (as a login would find it). Raises DirectoryUnavailable."""
    backend = UncloudLDAPBackend()
    ldap_user = _LDAPUser(backend, username=username.strip())
    try:
        connection = ldap_user.connection  # binds with LDAP_BIND_DN
        if backend.settings.USER_DN_TEMPLATE:
            dn = backend.settings.USER_DN_TEMPLATE % {"user": ldap.dn.escape_dn_chars(username.strip())}
            try:
                return bool(connection.search_s(dn, ldap.SCOPE_BASE, "(objectClass=*)", ["1.1"]))
            except ldap.NO_SUCH_OBJECT:
                return False
        return len(list(backend.settings.USER_SEARCH.execute(connection, {"user": username.strip()}))) > 0
    except ldap.LDAPError as error:
        raise DirectoryUnavailable(str(error)) from error
