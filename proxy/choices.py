from django.db import models


class DomainStatus(models.TextChoices):
    PENDING = "pending", "Waiting for proof"
    PROVEN = "proven", "Proven (served)"
    FAILED = "failed", "Proof failed"
