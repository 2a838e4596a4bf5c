"""Every decimal of billing becomes an integer of its smallest unit (billing/fields.py: SQLite stores
DECIMAL as binary floats, so its sums and CHECK constraints were float arithmetic).

Existing rows are converted in place: value * 10**decimal_places, rounded (a stored value has no more
decimals than its column, so nothing is lost). All columns of a table change in one statement, so
`total = subtotal + vat_amount` holds before and after.
"""

from decimal import Decimal

import django.core.validators
from django.db import migrations

import billing.fields


class StoreAsUnits(migrations.operations.base.Operation):
    """AlterField for several DecimalField -> ExactDecimalField columns of a model, with their data."""

    reversible = True

    def __init__(self, model_name, fields):
        self.model_name = model_name
        self.fields = fields

    def deconstruct(self):
        return self.__class__.__name__, [self.model_name, self.fields], {}

    def state_forwards(self, app_label, state):
        for name, field in self.fields:
            state.alter_field(app_label, self.model_name, name, field, True)

    def describe(self):
        return f"Store {self.model_name}'s decimals as integers of their smallest unit"

    def _convert(self, schema_editor, model, *, to_units: bool):
        quote = schema_editor.quote_name
        table = quote(model._meta.db_table)
        parts = []
        for name, _ in self.fields:
            field = model._meta.get_field(name)
            column, scale = quote(field.column), 10 ** field.decimal_places
            if schema_editor.connection.vendor == "postgresql":
                parts.append(f"ALTER COLUMN {column} TYPE bigint USING round({column} * {scale})::bigint" if to_units
                             else f"ALTER COLUMN {column} TYPE numeric({field.max_digits}, {field.decimal_places})"
                                  f" USING {column}::numeric / {scale}")
            else:
                parts.append(f"{column} = CAST(round({column} * {scale}) AS INTEGER)" if to_units
                             else f"{column} = {column} * 1.0 / {scale}")
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(f"ALTER TABLE {table} " + ", ".join(parts))
        else:
            schema_editor.execute(f"UPDATE {table} SET " + ", ".join(parts))

    def _alter_columns(self, app_label, schema_editor, from_state, target_state):
        """SQLite: rebuild the table once per column with its new declared type (values are copied)."""
        state = from_state.clone()
        target = target_state.apps.get_model(app_label, self.model_name)
        for name, _ in self.fields:
            before = state.apps.get_model(app_label, self.model_name)
            state.alter_field(app_label, self.model_name, name, target._meta.get_field(name).clone(), True)
            after = state.apps.get_model(app_label, self.model_name)
            schema_editor.alter_field(after, before._meta.get_field(name), after._meta.get_field(name))

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = to_state.apps.get_model(app_label, self.model_name)
        if schema_editor.connection.vendor == "postgresql":
            self._convert(schema_editor, model, to_units=True)
        else:
            # Scale while the columns are still numeric (SQLite converts 2538.0 to the integer 2538).
            self._convert(schema_editor, from_state.apps.get_model(app_label, self.model_name), to_units=True)
            self._alter_columns(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        old = to_state.apps.get_model(app_label, self.model_name)
        if schema_editor.connection.vendor == "postgresql":
            self._convert(schema_editor, old, to_units=False)
        else:
            self._alter_columns(app_label, schema_editor, from_state, to_state)
            self._convert(schema_editor, old, to_units=False)


class Migration(migrations.Migration):
    dependencies = [("billing", "0002_catalogue_and_vat_rates")]

    operations = [
        StoreAsUnits("coupon", [
                ("amount", billing.fields.ExactDecimalField(decimal_places=2, max_digits=14, validators=[django.core.validators.MinValueValidator(Decimal('0.01'))])),
        ]),
        StoreAsUnits("price", [
                ("amount", billing.fields.ExactDecimalField(decimal_places=6, default=Decimal('0'), max_digits=14)),
                ("per_core", billing.fields.ExactDecimalField(decimal_places=6, default=Decimal('0'), max_digits=14)),
                ("per_memory_gib", billing.fields.ExactDecimalField(decimal_places=6, default=Decimal('0'), max_digits=14)),
                ("per_disk_gib", billing.fields.ExactDecimalField(decimal_places=6, default=Decimal('0'), max_digits=14)),
        ]),
        StoreAsUnits("bill", [
                ("subtotal", billing.fields.ExactDecimalField(decimal_places=2, max_digits=14)),
                ("vat_rate_percent", billing.fields.ExactDecimalField(decimal_places=2, default=Decimal('0.00'), max_digits=5)),
                ("vat_amount", billing.fields.ExactDecimalField(decimal_places=2, default=Decimal('0.00'), max_digits=14)),
                ("total", billing.fields.ExactDecimalField(decimal_places=2, max_digits=14)),
        ]),
        StoreAsUnits("bankentry", [
                ("amount", billing.fields.ExactDecimalField(decimal_places=2, max_digits=14)),
        ]),
        StoreAsUnits("cardcharge", [
                ("amount", billing.fields.ExactDecimalField(decimal_places=2, max_digits=14)),
        ]),
        StoreAsUnits("order", [
                ("quantity", billing.fields.ExactDecimalField(decimal_places=3, default=Decimal('1'), max_digits=14)),
                ("amount", billing.fields.ExactDecimalField(decimal_places=6, default=Decimal('0'), help_text='Price of the whole order per period', max_digits=14)),
        ]),
        StoreAsUnits("billline", [
                ("quantity", billing.fields.ExactDecimalField(decimal_places=6, help_text='Periods charged (e.g. 0.5 month)', max_digits=16)),
                ("unit_amount", billing.fields.ExactDecimalField(decimal_places=6, default=Decimal('0'), max_digits=14)),
                ("amount", billing.fields.ExactDecimalField(decimal_places=2, max_digits=14)),
        ]),
        StoreAsUnits("payment", [
                ("amount", billing.fields.ExactDecimalField(decimal_places=2, max_digits=14, validators=[django.core.validators.MinValueValidator(Decimal('0.01'))])),
        ]),
        StoreAsUnits("posting", [
                ("amount", billing.fields.ExactDecimalField(decimal_places=2, help_text='Debit positive, credit negative', max_digits=14)),
        ]),
        StoreAsUnits("refund", [
                ("amount", billing.fields.ExactDecimalField(decimal_places=2, max_digits=14, validators=[django.core.validators.MinValueValidator(Decimal('0.01'))])),
        ]),
        StoreAsUnits("vatrate", [
                ("rate_percent", billing.fields.ExactDecimalField(decimal_places=2, max_digits=5, validators=[django.core.validators.MinValueValidator(Decimal('0'))])),
        ]),
    ]
