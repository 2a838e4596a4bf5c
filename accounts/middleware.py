from urllib.parse import urlencode

from django.http import JsonResponse
from django.shortcuts import redirect
from django.urls import reverse

# Pages a staff member without a verified second factor may still reach: enough to enrol and leave.
_OPEN_PATHS = ("/static/", "/favicon.ico", "/login/", "/logout/", "/account/otp/", "/healthz")


def _needs_second_factor(user) -> bool:
    """Staff always; everyone else once they have a second factor (a session opened before they enrolled
    must pass it too, or it would stay a way around it)."""
    if user.is_staff:
        return True
    from django_otp import user_has_device

    return user_has_device(user)


class StaffOTPMiddleware:
    """Staff must have TOTP, and whoever has one must use it: until their session passed it, every page
    leads to enrolment or the code form."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if (
            user is not None and user.is_authenticated
            and not user.is_verified() and not request.path.startswith(_OPEN_PATHS)
            and _needs_second_factor(user)
        ):
            if request.path.startswith("/api/"):
                return JsonResponse({"detail": "This session needs your second factor: log in with your code."},
                                    status=403)
            return redirect(f"{reverse('otp')}?{urlencode({'next': request.get_full_path()})}")
        return self.get_response(request)
