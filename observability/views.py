import os

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from accounts.scoping import scoped
from agents.models import Host
from observability.access import may_read_metrics
from observability.collectors import ControlPlaneCollector
from observability.exporters import exporter_target
from observability.graphs import render_graph
from observability.series import GRAPHS, RANGES, vm_usage
from vms.choices import VMStatus
from vms.models import VM


def _refused(request):
    # The endpoint's existence is no secret; a scraper without its token is told why it got nothing.
    return JsonResponse({"detail": "Metrics are for staff and for scrapers with UNCLOUD_METRICS_TOKEN."},
                        status=403)


def _registry():
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ControlPlaneCollector())
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Several web processes (gunicorn workers): their request histograms are summed from files.
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        from observability.middleware import REQUEST_SECONDS

        registry.register(REQUEST_SECONDS)
    return registry


@require_GET
def metrics(request):
    if not may_read_metrics(request):
        return _refused(request)
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)


def _control_plane_target(request) -> str:
    return settings.UNCLOUD_METRICS_SELF_TARGET or request.get_host()


@require_GET
def service_discovery(request):
    """Prometheus http_sd_config: the control plane and every host's exporter, labelled."""
    if not may_read_metrics(request):
        return _refused(request)
    site = settings.UNCLOUD_SITE_NAME
    groups = [{"targets": [_control_plane_target(request)],
               "labels": {"job": "uncloud-control-plane", "uncloud_role": "control-plane", "site": site,
                          "__scheme__": request.scheme, "__metrics_path__": "/metrics"}}]
    for host in Host.objects.order_by("name").only("name", "status", "liveness", "ssh_address", "transport"):
        target = exporter_target(host)
        if target is None:
            continue
        groups.append({"targets": [target],
                       "labels": {"job": "uncloud-host", "uncloud_role": "host", "site": site, "host": host.name,
                                  "status": host.status, "liveness": host.liveness,
                                  "__scheme__": "http", "__metrics_path__": "/metrics"}})
    return JsonResponse(groups, safe=False)


def visible_vm(user, uuid):
    return get_object_or_404(scoped(VM.objects.exclude(status=VMStatus.DELETED), user), uuid=uuid)


@login_required
@require_GET
def vm_graph(request, uuid, graph):
    if graph not in GRAPHS:
        raise Http404
    range_name = request.GET.get("range", "1h")
    if range_name not in RANGES:
        return HttpResponse(f"range must be one of {', '.join(RANGES)}", status=400, content_type="text/plain")
    vm = visible_vm(request.user, uuid)
    response = HttpResponse(render_graph(vm_usage(vm.uuid, range_name), graph), content_type="image/svg+xml")
    response["Cache-Control"] = "private, max-age=30"
    return response
