"""Portal pages of networks: the site's public ones and your projects' private ones."""


from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from accounts.errors import Conflict
from accounts.quotas import QuotaExceeded
from accounts.scoping import default_project, projects_of, scoped
from networks import actions
from networks.models import NIC
from networks.visibility import networks_visible_to


class NetworkForm(forms.Form):
    project = forms.ModelChoiceField(queryset=None, to_field_name="uuid", empty_label=None)
    name = forms.CharField(max_length=100)

    def __init__(self, user, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["project"].queryset = projects_of(user)
        self.fields["project"].initial = getattr(default_project(user), "uuid", None)


def _error_text(error) -> str:
    if isinstance(error, ValidationError):
        return " ".join(error.messages)
    return str(getattr(error, "detail", error))


@login_required
def network_list(request):
    form = NetworkForm(request.user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            network = actions.do_create_network(request.user, form.cleaned_data["project"], form.cleaned_data["name"])
        except (Conflict, ValidationError, QuotaExceeded) as error:
            form.add_error(None, _error_text(error))
        else:
            messages.success(request, f"Network {network.name} created: {network.prefix}.")
            return redirect("network", uuid=network.uuid)
    networks = networks_visible_to(request.user).select_related("project")
    return render(request, "networks/network_list.html", {"networks": networks, "form": form})


@login_required
def network_detail(request, uuid):
    network = get_object_or_404(networks_visible_to(request.user).select_related("project"), uuid=uuid)
    # On a public network a customer sees only their own VMs' ports, never their neighbours'.
    nics = scoped(NIC.objects.filter(network=network).select_related("vm"), request.user, field="vm__project")
    return render(request, "networks/network_detail.html", {"network": network, "nics": nics})


@login_required
@require_POST
def network_delete(request, uuid):
    network = get_object_or_404(networks_visible_to(request.user).filter(project__isnull=False), uuid=uuid)
    try:
        actions.do_delete_network(request.user, network)
    except (Conflict, ValidationError, QuotaExceeded) as error:
        messages.error(request, _error_text(error))
        return redirect("network", uuid=network.uuid)
    messages.success(request, f"Network {network.name} deleted.")
    return redirect("networks")
