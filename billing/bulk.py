"""Inserting many rows given as tuples: the billing run's writes.

A model instance per row, and the ORM preparing every field of it, cost more than the rest of a
billing run together, and with psycopg's client-side binding Django's bulk INSERT also spells every
value into the SQL text. On PostgreSQL the rows go in with one COPY per table instead; elsewhere
(SQLite in the embedded setup) they become instances for bulk_create: slower, but the same rows.

Values must already be what the column stores (Decimal (converted to the integer an ExactDecimalField
stores), aware datetime, date, str, int, UUID); JSON
columns take the Python value. Fields left out get what Django would give them: their default (called
per row when it is callable), now for auto_now(_add), else the field's empty value.
"""

import json
from contextlib import contextmanager

from django.db import connections, router
from django.db.models import JSONField
from django.utils import timezone

from billing.fields import ExactDecimalField


def use_copy(connection) -> bool:
    return connection.vendor == "postgresql"


def insert_rows(model, fields, rows) -> None:
    """Insert rows (tuples in the order of `fields`, attnames such as "bill_id")."""
    connection = connections[router.db_for_write(model)]
    if not use_copy(connection):
        model.objects.bulk_create(model(**dict(zip(fields, row, strict=True))) for row in rows)
        return
    _copy(connection, model, list(fields), rows)


def insert_rows_returning_ids(model, fields, rows) -> list[int]:
    """insert_rows, and the new rows' primary keys in the order of `rows`."""
    rows = list(rows)
    if not rows:
        return []
    connection = connections[router.db_for_write(model)]
    if not use_copy(connection):
        created = model.objects.bulk_create([model(**dict(zip(fields, row, strict=True))) for row in rows])
        return [instance.pk for instance in created]
    pk = model._meta.pk
    with connection.cursor() as cursor:
        # Taking the keys from the column's own sequence keeps them unique beside ORM inserts.
        cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                       [model._meta.db_table, pk.column, len(rows)])
        ids = [row[0] for row in cursor.fetchall()]
    _copy(connection, model, [pk.attname, *fields], ((new_id, *row) for new_id, row in zip(ids, rows, strict=True)))
    return ids


def _copy(connection, model, fields, rows) -> None:
    meta = model._meta
    given = set(fields)
    by_attname = {field.attname: field for field in meta.concrete_fields}
    unknown = given - by_attname.keys()
    if unknown:
        raise ValueError(f"{model.__name__} has no fields {sorted(unknown)}")
    now = timezone.now()
    constants, per_row = [], []
    for field in meta.concrete_fields:
        if field.attname in given:
            continue
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            constants.append((field, now))
        elif field.has_default() and callable(field.default):
            per_row.append((field, field.default))
        elif not field.primary_key:
            constants.append((field, field.get_default()))
    columns = fields + [field.attname for field, _ in constants] + [field.attname for field, _ in per_row]
    json_positions = [index for index, name in enumerate(columns) if isinstance(by_attname[name], JSONField)]
    # Exact decimals are integers of their smallest unit in the column (billing/fields.py).
    unit_positions = [index for index, name in enumerate(columns) if isinstance(by_attname[name], ExactDecimalField)]
    constant_values = tuple(value for _, value in constants)
    makers = [make for _, make in per_row]
    quote = connection.ops.quote_name
    statement = (f"COPY {quote(meta.db_table)} ({', '.join(quote(by_attname[name].column) for name in columns)})"
                 " FROM STDIN")
    with connection.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            values = (*row, *constant_values, *(make() for make in makers))
            if json_positions or unit_positions:
                values = list(values)
                for index in unit_positions:
                    values[index] = by_attname[columns[index]].to_units(values[index])
                for index in json_positions:
                    if values[index] is not None:  # None is SQL NULL, as the ORM stores it
                        values[index] = json.dumps(values[index], cls=by_attname[columns[index]].encoder)
            copy.write_row(values)


@contextmanager
def counting_statements(connection):
    """Collect every statement sent on `connection` meanwhile (for the bench and tests): Django's
    query capture does not see COPY, a cursor class on the psycopg connection sees execute,
    executemany and copy alike. Elsewhere (SQLite, no COPY) Django's execute wrapper sees them all."""
    connection.ensure_connection()
    if not use_copy(connection):
        statements = []

        def count(execute, sql, params, many, context):
            statements.append(sql)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(count):
            yield statements
        return
    raw = connection.connection
    plain = raw.cursor_factory
    statements = []

    class CountingCursor(plain):
        def execute(self, query, *args, **kwargs):
            statements.append(query)
            return super().execute(query, *args, **kwargs)

        def executemany(self, query, *args, **kwargs):
            statements.append(query)
            return super().executemany(query, *args, **kwargs)

        def copy(self, statement, *args, **kwargs):
            statements.append(statement)
            return super().copy(statement, *args, **kwargs)

    raw.cursor_factory = CountingCursor
    try:
        yield statements
    finally:
        raw.cursor_factory = plain
