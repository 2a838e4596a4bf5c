"""Portal pages of a VM's networking: its NICs, its firewall and its public IPv4 addresses."""

import uuid as uuid_module

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.module_loading import import_string
from django.views.decorators.http import require_POST

from accounts.errors import Conflict
from accounts.quotas import QuotaExceeded
from networks.choices import IngressProtocol
from networks.models import Firewall, IPv4Address
from networks.visibility import networks_visible_to
from vms import networking
from vms.views import error_text as _error_text
from vms.views import visible_vms


def _vm_of(request, uuid):
    return get_object_or_404(visible_vms(request.user).select_related("project", "host"), uuid=uuid)


class IngressRuleForm(forms.Form):
    protocol = forms.ChoiceField(choices=IngressProtocol.choices)
    port_min = forms.IntegerField(required=False, min_value=1, max_value=65535, label="Port")
    port_max = forms.IntegerField(required=False, min_value=1, max_value=65535, label="to port",
                                  help_text="Leave empty for a single port.")
    source = forms.CharField(max_length=49, initial="::/0", help_text="IPv6 prefix, ::/0 for anyone")
    description = forms.CharField(max_length=200, required=False)


def _rules_of(vm, without=None) -> list[dict]:
    rules = vm.ingress_rules.exclude(pk=without.pk) if without is not None else vm.ingress_rules.all()
    return [{"protocol": rule.protocol, "port_min": rule.port_min, "port_max": rule.port_max,
             "source": rule.source, "description": rule.description} for rule in rules]


def _networks_for(request, vm):
    """Networks this VM may join: the site's public ones and its own project's."""
    return networks_visible_to(request.user).filter(Q(is_public=True) | Q(project=vm.project))


@login_required
def vm_networking(request, uuid):
    vm = _vm_of(request, uuid)
    nics = vm.nics.select_related("network").prefetch_related("ipv4_addresses")
    # "Attach to" offers only networks the VM is not on yet.
    networks = _networks_for(request, vm).exclude(nics__vm=vm)
    firewall = Firewall.objects.filter(vm=vm).first()
    addresses = IPv4Address.objects.filter(project=vm.project).select_related("nic__vm")
    return render(request, "networks/vm_networking.html", {
        "vm": vm, "nics": nics, "networks": networks, "rules": vm.ingress_rules.all(), "firewall": firewall,
        "rule_form": IngressRuleForm(), "addresses": addresses,
        "ipv4_price": _ipv4_price_text(vm),
    })


def _ipv4_price_text(vm) -> str:
    """The IPv4 extra's monthly price written as the VM create form writes it ("CHF 2.16 per month
    (incl. 8.1% VAT)"): billing's own quote, reached through the same settings hook as that form
    (vms sits below billing and does not import it)."""
    path = settings.UNCLOUD_VM_PRICE_FUNCTION
    if not path:
        return ""
    quote = import_string(path)(vm.project, cores=vm.cores, memory_mib=vm.memory_mib, disk_mib=0)
    if quote is None or quote.ipv4 is None:
        return ""
    return f"{quote.currency} {quote.ipv4.total} per month ({quote.vat_text})"


def _back(vm):
    return redirect("vm-networking", uuid=vm.uuid)


def _report(request, call, success: str):
    try:
        call()
    except (Conflict, ValidationError, QuotaExceeded) as error:
        messages.error(request, _error_text(error))
    else:
        messages.success(request, success)


@login_required
@require_POST
def vm_nic_attach(request, uuid):
    vm = _vm_of(request, uuid)
    raw = request.POST.get("network")
    network = _networks_for(request, vm).filter(uuid=raw).first() if _is_uuid(raw) else None
    if network is None:
        messages.error(request, "Choose one of the networks listed.")
        return _back(vm)
    _report(request, lambda: networking.do_attach_nic(request.user, vm, network),
            f"{vm.name} is joining {network.name}.")
    return _back(vm)


@login_required
@require_POST
def vm_nic_detach(request, uuid, nic_uuid):
    vm = _vm_of(request, uuid)
    nic = get_object_or_404(vm.nics, uuid=nic_uuid)
    _report(request, lambda: networking.do_detach_nic(request.user, nic), f"{vm.name} is leaving {nic.network.name}.")
    return _back(vm)


@login_required
@require_POST
def vm_rule_add(request, uuid):
    vm = _vm_of(request, uuid)
    form = IngressRuleForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(f"{field}: {' '.join(errors)}" for field, errors in form.errors.items()))
        return _back(vm)
    _report(request, lambda: networking.do_replace_ingress_rules(request.user, vm, [*_rules_of(vm), form.cleaned_data]),
            "Rule added; it takes effect in a moment.")
    return _back(vm)


@login_required
@require_POST
def vm_rule_remove(request, uuid, rule_uuid):
    vm = _vm_of(request, uuid)
    rule = get_object_or_404(vm.ingress_rules, uuid=rule_uuid)
    _report(request, lambda: networking.do_replace_ingress_rules(request.user, vm, _rules_of(vm, without=rule)),
            "Rule removed.")
    return _back(vm)


@login_required
@require_POST
def vm_ipv4(request, uuid, what):
    """allocate (a new address for this VM), map/unmap/release (one of the project's addresses)."""
    vm = _vm_of(request, uuid)
    first_nic = vm.nics.order_by("index").first()
    if what == "allocate":
        if first_nic is None:
            messages.error(request, f"{vm.name} has no network interface to map an address to.")
            return _back(vm)
        _report(request, lambda: networking.do_allocate_ipv4(request.user, vm.project, first_nic),
                "A public IPv4 address is being mapped to this VM.")
        return _back(vm)
    raw = request.POST.get("address")
    address = IPv4Address.objects.filter(project=vm.project, uuid=raw).first() if _is_uuid(raw) else None
    if address is None:
        raise Http404
    if what == "map" and first_nic is not None:
        _report(request, lambda: networking.do_map_ipv4(request.user, address, first_nic),
                f"{address.address} now goes to {vm.name}.")
    elif what == "unmap":
        _report(request, lambda: networking.do_map_ipv4(request.user, address, None), f"{address.address} is unmapped.")
    elif what == "release":
        _report(request, lambda: networking.do_release_ipv4(request.user, address), f"{address.address} is released.")
    else:
        raise Http404
    return _back(vm)


def _is_uuid(value) -> bool:
    try:
        uuid_module.UUID(str(value))
    except ValueError:
        return False
    return True
