from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.units import UnitError, parse_size


@extend_schema_field(OpenApiTypes.STR)
class SizeField(serializers.Field):
    """A size written like "2GiB", "512M" or a bare number in `unit`; stored as whole units."""

    def __init__(self, unit_bytes: int = 1024**2, min_value: int | None = None, max_value: int | None = None, **kwargs):
        self.unit_bytes = unit_bytes
        self.min_value = min_value
        self.max_value = max_value
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        try:
            value = parse_size(data, self.unit_bytes)
        except UnitError as error:
            raise serializers.ValidationError(str(error)) from None
        if self.min_value is not None and value < self.min_value:
            raise serializers.ValidationError(f"must be at least {self.min_value} MiB" if self.unit_bytes == 1024**2
                                              else f"must be at least {self.min_value}")
        if self.max_value is not None and value > self.max_value:
            raise serializers.ValidationError(f"must be at most {self.max_value} MiB" if self.unit_bytes == 1024**2
                                              else f"must be at most {self.max_value}")
        return value

    def to_representation(self, value):
        return value
