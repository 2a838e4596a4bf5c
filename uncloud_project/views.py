from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import render

from accounts.scoping import projects_of, scoped
from agents.models import Operation
from vms.models import VM


@login_required
def dashboard(request):
    projects = projects_of(request.user)
    context = {
        "projects": projects,
        "vm_count": scoped(VM.objects.all(), request.user).count(),
        "recent_operations": scoped(Operation.objects.all(), request.user)[:10],
    }
    return render(request, "portal/dashboard.html", context)


def healthz(request):
    """For load balancers and the run script: the database answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
