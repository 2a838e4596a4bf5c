"""The filter backend every list uses: query parameters are checked like any input (400, not a
database error), whatever the model field."""

from django import forms
from django.db import models
from django_filters import rest_framework as filters


class IPAddressFilter(filters.CharFilter):
    """An address parameter must be an address: PostgreSQL's inet refuses anything else with an error."""

    field_class = forms.GenericIPAddressField


class FilterSet(filters.FilterSet):
    FILTER_DEFAULTS = {**filters.FilterSet.FILTER_DEFAULTS,
                       models.GenericIPAddressField: {"filter_class": IPAddressFilter}}


class FilterBackend(filters.DjangoFilterBackend):
    filterset_base = FilterSet
