from django.db import models


class MembershipRole(models.TextChoices):
    # The owner is Project.owner; members are everyone else who works in the project.
    MEMBER = "member", "Member"
    ADMIN = "admin", "Admin"
