import hashlib
import secrets
import uuid

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from accounts.choices import MembershipRole, TokenScope, UserOrigin


class Project(models.Model):
    """Owns every customer resource. Members see and change everything in it."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=100)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_projects")
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="member_projects", blank=True
    )
    created = models.DateTimeField(auto_now_add=True)
    # Quotas: staff change them; new projects get the UNCLOUD_DEFAULT_QUOTA_* settings.
    quota_vms = models.PositiveIntegerField(default=0)
    quota_cores = models.PositiveIntegerField(default=0)
    quota_memory_mib = models.PositiveBigIntegerField(default=0)
    quota_disk_mib = models.PositiveBigIntegerField(default=0)
    quota_ipv4 = models.PositiveIntegerField(default=0, validators=[MinValueValidator(0)])

    class Meta:
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="project_name_unique_per_owner")]

    def __str__(self):
        return self.name


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    role = models.CharField(max_length=20, choices=MembershipRole.choices, default=MembershipRole.MEMBER)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="membership_unique")]


class Identity(models.Model):
    """Where a user comes from (a local account or the LDAP directory) and what was verified about them.

    A directory login only ever finds users whose origin is the directory, and the local password
    backend only ever accepts local users, so neither kind can take the other over. A user without
    a row counts as local (the safe side: the directory never adopts it).
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True,
                                related_name="identity")
    origin = models.CharField(max_length=12, choices=UserOrigin.choices, default=UserOrigin.LOCAL)
    directory_dn = models.CharField(max_length=500, blank=True, help_text="The LDAP entry of a directory user.")
    # Set when the sign-up link was followed (or for accounts staff and the directory made). A user
    # staff deactivated stays deactivated: only a never-verified sign-up is activated by the link.
    email_verified = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "identities"

    def __str__(self):
        return f"{self.user} ({self.get_origin_display()})"


def is_directory_user(user) -> bool:
    if user is None or user.pk is None:
        return False
    return Identity.objects.filter(user_id=user.pk, origin=UserOrigin.DIRECTORY).exists()


TOKEN_PREFIX = "uc_"


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class APIToken(models.Model):
    """A per-user API credential. Only its hash is stored; the raw value is shown once."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    # The first characters identify a token in lists without revealing it.
    key_prefix = models.CharField(max_length=12, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)
    expires = models.DateTimeField(null=True, blank=True)
    revoked = models.DateTimeField(null=True, blank=True)
    scope = models.CharField(max_length=12, choices=TokenScope.choices, default=TokenScope.READ_WRITE)

    class Meta:
        verbose_name = "API token"
        verbose_name_plural = "API tokens"
        ordering = ["-created"]

    def __str__(self):
        return f"{self.name} ({self.key_prefix}…)"

    @staticmethod
    def generate_key() -> str:
        return TOKEN_PREFIX + secrets.token_urlsafe(32)

    @property
    def is_active(self) -> bool:
        if self.revoked:
            return False
        return self.expires is None or self.expires > timezone.now()


class Invitation(models.Model):
    """An invitation to join a project, for one username or one e-mail address; the invitee accepts it.

    Only the invitee can accept: the user with that username, or a user whose verified e-mail address
    is the invited one. The mailed link only leads there; it is not a key that lets anyone in.
    Only the hash of the link's secret is stored.
    """

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField(blank=True)
    username = models.CharField(max_length=150, blank=True)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created = models.DateTimeField(auto_now_add=True)
    expires = models.DateTimeField()
    accepted = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "email", "username"], condition=models.Q(accepted__isnull=True),
                name="invitation_open_unique",
            ),
            models.CheckConstraint(
                condition=~models.Q(email="") | ~models.Q(username=""), name="invitation_names_someone",
            ),
        ]

    def __str__(self):
        return f"{self.invitee} → {self.project}"

    @property
    def invitee(self) -> str:
        return self.username or self.email

    @property
    def is_open(self) -> bool:
        return self.accepted is None and self.expires > timezone.now()


class AuditEntry(models.Model):
    """Who asked for what. Written in the same transaction as the change it records."""

    created = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    project = models.ForeignKey(Project, null=True, blank=True, on_delete=models.SET_NULL)
    action = models.CharField(max_length=64)
    target_kind = models.CharField(max_length=32, blank=True)
    target_uuid = models.UUIDField(null=True, blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self):
        return f"{self.created:%Y-%m-%d %H:%M} {self.actor} {self.action}"
