from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import FileResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import cache_control

from accounts.quotas import limits_of
from accounts.scoping import projects_of, scoped
from agents.models import Operation
from vms.actions import project_usage
from vms.choices import VMStatus
from vms.models import VM

_RESOURCES = [("vms", "VMs", ""), ("cores", "Cores", ""), ("memory_mib", "Memory", " MiB"),
              ("disk_mib", "Disk", " MiB"), ("ipv4", "IPv4 addresses", "")]


def _usage_rows(projects):
    """Per project: what is in use next to its quota, counted by the same function that enforces them."""
    rows = []
    for project in projects:
        used, limits = project_usage(project), limits_of(project)
        rows.append({"project": project, "resources": [
            {"label": label, "used": getattr(used, key), "limit": getattr(limits, key), "unit": unit,
             "percent": min(100, 100 * getattr(used, key) // getattr(limits, key)) if getattr(limits, key) else 100}
            for key, label, unit in _RESOURCES
        ]})
    return rows


@login_required
def dashboard(request):
    projects = list(projects_of(request.user).select_related("owner").order_by("name", "id"))
    context = {
        "projects": projects,
        "usage": _usage_rows(projects),
        "vm_count": scoped(VM.objects.exclude(status=VMStatus.DELETED), request.user).count(),
        "recent_operations": scoped(Operation.objects.all(), request.user)[:10],
    }
    return render(request, "portal/dashboard.html", context)


def healthz(request):
    """For load balancers and the run script: the database answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


@cache_control(max_age=86400, public=True)
def favicon(request):
    """Browsers ask for /favicon.ico on their own, whatever the page links: answer it, from the product."""
    return FileResponse(open(settings.BASE_DIR / "static" / "favicon.ico", "rb"), content_type="image/x-icon")
