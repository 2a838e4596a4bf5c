"""Names for statements written by hand, once per process, where the ORM's own building of a query
costs more than running it (a VM create's hot path: vms/actions.py, vms/scheduler.py,
agents/operations.py, billing/actions.py). Tables and columns come from the models, quoted for
the database in use, so a renamed field or table is never left behind in a string."""

from django.db import connection


def table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def column(model, field: str) -> str:
    return connection.ops.quote_name(model._meta.get_field(field).column)


def columns(model, alias: str = "") -> str:
    """Every column of the model, in field order (what Model.objects.raw() reads back as a model)."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + connection.ops.quote_name(field.column) for field in model._meta.concrete_fields)


def placeholders(count: int) -> str:
    """`%s, %s, ...`: the parameters of an IN (...) list."""
    return ", ".join(["%s"] * count)
