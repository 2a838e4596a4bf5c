"""LDAP logins: django-auth-ldap, plus what every uncloud user needs (a first project)."""

from django_auth_ldap.backend import LDAPBackend

from accounts.models import Project


class UncloudLDAPBackend(LDAPBackend):
    """Users from the directory; staff status follows LDAP_STAFF_GROUP on every login.

    Their password lives in the directory: Django keeps an unusable one, so password reset
    by mail never applies to them.
    """

    def authenticate_ldap_user(self, ldap_user, password):
        user = super().authenticate_ldap_user(ldap_user, password)
        if user is not None and not Project.objects.filter(owner=user).exists():
            from accounts.actions import do_create_project

            do_create_project(user, f"{user.username}'s project", actor=user)
        return user
