"""Every user knows where they come from, however they were made.

do_create_user and the LDAP backend record the origin themselves; users made elsewhere (the admin's
"Add user", `createsuperuser`) are local accounts made by staff, trusted as they are.
"""

from django.conf import settings
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.utils import timezone


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="accounts.identity_for_new_users")
def identity_for_new_users(sender, instance, created, raw=False, **kwargs):
    if not created or raw or hasattr(instance, "ldap_user"):
        return  # the directory's users get theirs from the LDAP backend
    from accounts.choices import UserOrigin
    from accounts.models import Identity

    Identity.objects.get_or_create(user=instance, defaults={
        "origin": UserOrigin.LOCAL, "email_verified": timezone.now() if instance.is_active else None})
