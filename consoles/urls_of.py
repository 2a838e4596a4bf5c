"""Where browsers reach the console gateway, and which pages may open it."""

from urllib.parse import urlsplit

from django.conf import settings


def gateway_base_url(request) -> str:
    if settings.UNCLOUD_CONSOLE_URL:
        return settings.UNCLOUD_CONSOLE_URL.rstrip("/")
    port = settings.UNCLOUD_CONSOLE_BIND.rsplit(":", 1)[-1]
    host = urlsplit(f"//{request.get_host()}").hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"{'wss' if request.is_secure() else 'ws'}://{host}:{port}"


def console_url(request, vm_uuid, kind: str, ticket: str) -> str:
    return f"{gateway_base_url(request)}/{vm_uuid}/{kind}/?ticket={ticket}"


def gateway_origin(request) -> str:
    parts = urlsplit(gateway_base_url(request))
    return f"{parts.scheme}://{parts.netloc}"


def allowed_origins() -> list[str]:
    if settings.UNCLOUD_CONSOLE_ALLOWED_ORIGINS:
        return [origin.rstrip("/") for origin in settings.UNCLOUD_CONSOLE_ALLOWED_ORIGINS]
    parts = urlsplit(settings.SITE_URL)
    return [f"{parts.scheme}://{parts.netloc}"]
