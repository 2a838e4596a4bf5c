"""Portal page of a VM's domain names on the shared IPv4 proxy: claim, prove again, delete."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from accounts.errors import Conflict
from proxy import actions
from proxy.models import ProxyHost
from proxy.names import normalize_domain_name
from vms.views import error_text, visible_vms


def _vm_of(request, uuid):
    return get_object_or_404(visible_vms(request.user).select_related("project"), uuid=uuid)


def _back(vm):
    return redirect("vm-domains", uuid=vm.uuid)


@login_required
def vm_domains(request, uuid):
    vm = _vm_of(request, uuid)
    proxy_hosts = ProxyHost.objects.filter(is_active=True)
    return render(request, "proxy/vm_domains.html", {
        "vm": vm, "domains": vm.domain_names.order_by("name"),
        "proxy_addresses": [proxy_host.public_ipv4 for proxy_host in proxy_hosts],
        "jump": proxy_hosts.first(), "first_nic": vm.nics.order_by("index").first(), "jump_user": settings.UNCLOUD_PROXY_JUMP_USER,
    })


@login_required
@require_POST
def vm_domain_add(request, uuid):
    vm = _vm_of(request, uuid)
    try:
        name = normalize_domain_name(request.POST.get("name", ""))
        actions.do_create_domain(request.user, vm.project, vm, name,
                                 proxy_protocol=request.POST.get("proxy_protocol") == "on")
    except ValueError as error:
        messages.error(request, str(error))
    except (Conflict, ValidationError) as error:
        messages.error(request, error_text(error))
    else:
        messages.success(request, f"{name} is claimed; it is served once proven.")
    return _back(vm)


@login_required
@require_POST
def vm_domain_change(request, uuid, domain_uuid, what):
    vm = _vm_of(request, uuid)
    domain = get_object_or_404(vm.domain_names, uuid=domain_uuid)
    try:
        if what == "verify":
            actions.do_verify_domain(request.user, domain)
            messages.success(request, f"{domain.name} is being proven.")
        elif what == "delete":
            actions.do_delete_domain(request.user, domain)
            messages.success(request, f"{domain.name} is no longer served.")
        else:
            return _back(vm)
    except Conflict as error:
        messages.error(request, error_text(error))
    return _back(vm)
