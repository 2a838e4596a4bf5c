from accounts.models import AuditEntry


def record(actor, action: str, *, project=None, target=None, **data) -> AuditEntry:
    """Write one audit row. Call it inside the transaction of the change it describes."""
    return AuditEntry.objects.create(
        actor=actor if actor is not None and actor.is_authenticated else None,
        project=project,
        action=action,
        target_kind=target._meta.model_name if target is not None else "",
        target_uuid=getattr(target, "uuid", None),
        data=data,
    )
