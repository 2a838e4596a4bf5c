"""Who may read /metrics and the service discovery: staff with a verified session, or a scraper that
presents UNCLOUD_METRICS_TOKEN as a bearer token (Prometheus `authorization: {credentials: ...}`)."""

import hmac

from django.conf import settings


def scraper_token_matches(request) -> bool:
    expected = settings.UNCLOUD_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if not expected or scheme.lower() != "bearer" or not presented:
        return False
    return hmac.compare_digest(presented.strip().encode(), expected.encode())


def may_read_metrics(request) -> bool:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff and user.is_active:
        is_verified = getattr(user, "is_verified", None)
        if is_verified is not None and is_verified():
            return True
    return scraper_token_matches(request)
