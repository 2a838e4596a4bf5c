"""Turn the errors that bad input can cause into 4xx answers instead of 500s."""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.db.models import ProtectedError, RestrictedError
from django.http import JsonResponse
from django.views.defaults import page_not_found
from django.views.defaults import server_error as default_server_error
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from accounts.errors import Conflict, Unprocessable
from accounts.quotas import QuotaExceeded
from accounts.units import UnitError

__all__ = ["Conflict", "QuotaExceeded", "Unprocessable", "exception_handler"]  # the domain errors this handler answers


def exception_handler(exc, context):
    if isinstance(exc, RequestDataTooBig):
        # Django's own answer is an HTML 400 with no reason; say what the limit is. (Image uploads
        # stream their file to disk and are limited by UNCLOUD_IMAGE_MAX_UPLOAD_GIB instead.)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response({"detail": f"The request body is larger than the limit of {limit} bytes.",
                         "limit_bytes": limit}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, TooManyFieldsSent):
        return Response({"detail": f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} fields."},
                        status=status.HTTP_400_BAD_REQUEST)
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
    if isinstance(exc, Unprocessable):
        return Response({"detail": str(exc)}, status=status.HTTP_422_UNPROCESSABLE_ENTITY)
    if isinstance(exc, QuotaExceeded):
        return Response({"detail": str(exc)}, status=status.HTTP_403_FORBIDDEN)
    if isinstance(exc, Conflict):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, IntegrityError):
        return Response({"detail": "This conflicts with an existing object."}, status=status.HTTP_409_CONFLICT)
    return drf_exception_handler(exc, context)


def not_found(request, exception=None):
    """Django's handler404: JSON under /api/ (a path that matches no route, such as a malformed
    UUID, is a 404 like any other there), the usual page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)
    return page_not_found(request, exception)


def server_error(request):
    """Django's handler500: JSON under /api/, the usual page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Internal server error; it has been logged."},
                            status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    return default_server_error(request)
