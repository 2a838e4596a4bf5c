"""API and portal request latency, by route (the URL pattern, never the raw path: a label per UUID
would grow without bound) and status class."""

import time

from prometheus_client import Histogram

REQUEST_SECONDS = Histogram(
    "uncloud_http_request_duration_seconds", "Time to answer a request, by area, route, method and status class",
    ["area", "route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def _area(path: str) -> str:
    if path.startswith("/api/"):
        return "api"
    if path.startswith("/admin/"):
        return "admin"
    if path.startswith("/static/"):
        return "static"
    return "portal"


class RequestLatencyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = match.route if match is not None and match.route else "unmatched"
        method = request.method if request.method in METHODS else "other"
        REQUEST_SECONDS.labels(_area(request.path), route[:100], method,
                               f"{response.status_code // 100}xx").observe(time.perf_counter() - started)
        return response
