from django.db import models


class MembershipRole(models.TextChoices):
    # The owner is Project.owner; members are everyone else who works in the project.
    MEMBER = "member", "Member"
    ADMIN = "admin", "Admin"


class TokenScope(models.TextChoices):
    READ = "read", "Read-only"
    READ_WRITE = "read_write", "Read and write"


class UserOrigin(models.TextChoices):
    # Where a user's password lives. A directory login never takes over a local account, nor the reverse.
    LOCAL = "local", "Local (password in uncloud)"
    DIRECTORY = "directory", "Directory (LDAP)"
