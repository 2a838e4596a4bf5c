"""Turn the errors that bad input can cause into 4xx answers instead of 500s."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.db.models import ProtectedError, RestrictedError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from accounts.units import UnitError


class Conflict(Exception):
    """The request is valid but collides with current state (pool exhausted, still in use)."""


def exception_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        return Response(detail, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, UnitError):
        return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, (ProtectedError, RestrictedError)):
        names = sorted({str(obj) for obj in exc.protected_objects if obj is not None})[:10] if hasattr(
            exc, "protected_objects"
        ) else []
        message = "It is still in use" + (f" by: {', '.join(names)}" if names else "") + "."
        return Response({"detail": message}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, Conflict):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, IntegrityError):
        return Response({"detail": "This conflicts with an existing object."}, status=status.HTTP_409_CONFLICT)
    return drf_exception_handler(exc, context)
