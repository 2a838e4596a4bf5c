from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import FileResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import cache_control

from accounts.quotas import limits_of
from accounts.scoping import projects_of, scoped
from accounts.units import human_mib
from agents.models import Operation
from images.models import Disk, Image
from networks.models import Network
from vms.actions import project_usage
from vms.choices import VMStatus
from vms.models import VM

# (field, label, how to write an amount): sizes in human units, like "35 GiB of 500 GiB".
_RESOURCES = [("vms", "VMs", str), ("cores", "Cores", str), ("memory_mib", "Memory", human_mib),
              ("disk_mib", "Disk", human_mib), ("ipv4", "IPv4 addresses", str)]


def _usage_rows(projects):
    """Per project: what is in use next to its quota, counted by the same function that enforces them."""
    rows = []
    for project in projects:
        used, limits = project_usage(project), limits_of(project)
        rows.append({"project": project, "resources": [
            {"label": label, "used": write(getattr(used, key)), "limit": write(getattr(limits, key)),
             "percent": min(100, 100 * getattr(used, key) // getattr(limits, key)) if getattr(limits, key) else 100}
            for key, label, write in _RESOURCES
        ]})
    return rows


def _operations_with_targets(operations):
    """Operations, each with `target_name` and `target_url` (the VM, network, disk or image it works on)."""
    operations = list(operations)
    kinds = {"vm": (VM, "vm"), "network": (Network, "network"), "disk": (Disk, None), "image": (Image, "image")}
    names = {}
    for kind, (model, _) in kinds.items():
        uuids = {operation.target_uuid for operation in operations if operation.target_kind == kind}
        if uuids:
            names.update({(kind, row.uuid): row.name for row in model.objects.filter(uuid__in=uuids).only("uuid", "name")})
    for operation in operations:
        name = names.get((operation.target_kind, operation.target_uuid))
        url_name = kinds.get(operation.target_kind, (None, None))[1]
        operation.target_name = name or ""
        operation.target_url = reverse(url_name, args=[operation.target_uuid]) if name and url_name else ""
    return operations


@login_required
def dashboard(request):
    projects = list(projects_of(request.user).select_related("owner").order_by("name", "id"))
    context = {
        "projects": projects,
        "usage": _usage_rows(projects),
        "vm_count": scoped(VM.objects.exclude(status=VMStatus.DELETED), request.user).count(),
        "recent_operations": _operations_with_targets(scoped(Operation.objects.all(), request.user)[:10]),
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
