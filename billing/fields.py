"""Exact decimals on every database: a Decimal in Python, a whole number of its smallest unit in the column.

SQLite has no decimal type: a DECIMAL column holds a binary float, so SUM(amount) and `total = subtotal +
vat_amount` are float arithmetic there (25.38 + 2.06 != 27.44, 5.29 + 9.01 - 14.30 != 0). Payment
processors keep amounts as integer minor units for the same reason. ExactDecimalField keeps Django's
DecimalField API (forms, DRF, admin, validators see a DecimalField) but stores value * 10**decimal_places
in a BIGINT: sums, comparisons and CHECK constraints are integer arithmetic on SQLite and PostgreSQL
alike, and SUM() comes back through from_db_value as an exact Decimal.

Two rules follow. A value with more decimals than the field has is refused, not rounded (rounding is
billing.money's job, before a value is stored). And arithmetic between two such columns in SQL is only
right for + and - of the same scale (total = subtotal + vat_amount); anything else is done in Python.
"""

from decimal import Decimal

from django.core import checks
from django.db import models


class ExactDecimalField(models.DecimalField):
    description = "Exact decimal stored as an integer number of its smallest unit"

    def get_internal_type(self):
        return "BigIntegerField"

    def db_type(self, connection):
        return models.BigIntegerField().db_type(connection)

    def rel_db_type(self, connection):
        return self.db_type(connection)

    def _check_decimal_places_and_max_digits(self, **kwargs):
        errors = super()._check_decimal_places_and_max_digits(**kwargs)
        if not errors and self.max_digits > 18:
            errors.append(checks.Error("ExactDecimalField holds at most 18 digits (a BIGINT).", obj=self,
                                       id="billing.E001"))
        return errors

    @property
    def _unit(self) -> Decimal:
        return Decimal(1).scaleb(-self.decimal_places)

    def to_units(self, value) -> int | None:
        """The column's integer for a Decimal (ValueError when it has more decimals than the field)."""
        if value is None:
            return None
        value = self.to_python(value) if not isinstance(value, Decimal) else value
        scaled = value.scaleb(self.decimal_places)
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{value} has more than {self.decimal_places} decimals ({self.model.__name__}."
                             f"{self.name}); round it before storing it.")
        return int(scaled)

    def from_units(self, value) -> Decimal | None:
        if value is None:
            return None
        return Decimal(int(value)).scaleb(-self.decimal_places).quantize(self._unit)

    def to_python(self, value):
        if isinstance(value, float):
            # DecimalField would round a float to max_digits; a float reaching a money field is a bug.
            raise ValueError(f"{self.name}: a float ({value!r}) is not an exact amount; use Decimal.")
        return super().to_python(value)

    def from_db_value(self, value, expression, connection):
        # Also called for SUM()/MIN()/MAX() of the column (their output field is this field).
        return self.from_units(value)

    def get_db_prep_value(self, value, connection, prepared=False):
        if hasattr(value, "as_sql"):
            return value
        if not prepared:
            value = self.get_prep_value(value)
        return self.to_units(value)

    def get_db_prep_save(self, value, connection):
        return self.get_db_prep_value(value, connection)
