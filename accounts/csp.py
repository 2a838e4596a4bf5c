"""Content-Security-Policy on every response.

The policy (CONTENT_SECURITY_POLICY in settings) allows only this site's own scripts, plus inline
<script> blocks that carry this response's nonce (`nonce="{{ request.csp_nonce }}"`). Inline event
handlers are not allowed: forms ask for confirmation with `data-confirm` (static/portal/confirm.js).
A page that needs a third party (Stripe.js on the card pages) says so with @csp_allow, so nothing
else may load it.
"""

import secrets
from functools import wraps

from django.conf import settings

HEADER = "Content-Security-Policy"


def csp_allow(**directives):
    """View decorator: add sources to directives for this view only, e.g. script_src=["https://js.stripe.com"].
    Values may be callables (read at request time, so settings changes apply)."""
    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            response = view(request, *args, **kwargs)
            extra = getattr(response, "csp_extra", {})
            for name, sources in directives.items():
                sources = sources() if callable(sources) else sources
                extra.setdefault(name.replace("_", "-"), []).extend(sources)
            response.csp_extra = extra
            return response
        return wrapped
    return decorator


def build_policy(nonce: str, extra: dict | None = None) -> str:
    policy = {name: list(sources) for name, sources in settings.CONTENT_SECURITY_POLICY.items()}
    policy.setdefault("script-src", []).append(f"'nonce-{nonce}'")
    for name, sources in (extra or {}).items():
        current = policy.setdefault(name, [])
        if current == ["'none'"]:
            current.clear()
        current.extend(source for source in sources if source not in current)
    return "; ".join(f"{name} {' '.join(sources)}".strip() for name, sources in policy.items())


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.csp_nonce = secrets.token_urlsafe(16)
        response = self.get_response(request)
        if settings.CONTENT_SECURITY_POLICY and HEADER not in response:
            response[HEADER] = build_policy(request.csp_nonce, getattr(response, "csp_extra", None))
        return response


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def _stripe_script_sources() -> list[str]:
    return [origin for origin in (_origin(settings.STRIPE_JS_URL),) if origin]


def _stripe_frame_sources() -> list[str]:
    # Stripe.js draws card fields and 3-D Secure in frames from js.stripe.com and hooks.stripe.com.
    return [*_stripe_script_sources(), "https://hooks.stripe.com"]


def _stripe_connect_sources() -> list[str]:
    return [origin for origin in (_origin(settings.STRIPE_JS_URL), _origin(settings.STRIPE_API_BASE)) if origin]


# The card pages, and only they, may run Stripe.js (from STRIPE_JS_URL) and let it talk to Stripe.
uses_stripe_js = csp_allow(script_src=_stripe_script_sources, frame_src=_stripe_frame_sources,
                           connect_src=_stripe_connect_sources)
