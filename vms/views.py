"""Portal pages of VMs and SSH keys. They validate, then call vms.actions; they never change rows themselves."""

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Prefetch, Q
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.html import format_html
from django.utils.module_loading import import_string
from django.views.decorators.http import require_POST

from accounts.errors import Conflict, Unprocessable
from accounts.quotas import QuotaExceeded
from accounts.scoping import default_project, projects_of, scoped
from accounts.units import UnitError, format_mib, parse_mib
from agents.models import Operation
from images.choices import ImageStatus
from images.defaults import site_default_image
from images.visibility import images_visible_to
from networks.visibility import networks_visible_to
from vms import actions
from vms.choices import VMStatus
from vms.models import MIN_MEMORY_MIB, VM, SSHKey
from vms.sshkeys import SSHKeyError, parse_public_key
from vms.validators import VM_NAME, user_data_size_error

# Portal action name -> vms.actions function.
VM_ACTIONS = {"start": actions.do_start_vm, "stop": actions.do_stop_vm, "reboot": actions.do_reboot_vm,
              "delete": actions.do_delete_vm, "rebuild": actions.do_rebuild_vm}


def error_text(error) -> str:
    """What to show on a form for an error from an action (Conflict, QuotaExceeded, ValidationError)."""
    if isinstance(error, ValidationError):
        return " ".join(error.messages)
    detail = getattr(error, "detail", None)
    return str(detail if detail is not None else error)


def visible_vms(user):
    # A VM being deleted stays visible (with its progress) until its deletion is done.
    return scoped(VM.objects.exclude(status=VMStatus.DELETED), user)


class SizeField(forms.CharField):
    def __init__(self, *, min_mib: int, max_mib: int, **kwargs):
        self.min_mib, self.max_mib = min_mib, max_mib
        super().__init__(max_length=20, **kwargs)

    def clean(self, value):
        value = super().clean(value)
        try:
            mib = parse_mib(value)
        except UnitError as error:
            raise forms.ValidationError(str(error)) from None
        if not self.min_mib <= mib <= self.max_mib:
            raise forms.ValidationError(f"Must be between {format_mib(self.min_mib)} and {format_mib(self.max_mib)}.")
        return mib


class VMForm(forms.Form):
    project = forms.ModelChoiceField(queryset=None, to_field_name="uuid", empty_label=None)
    name = forms.RegexField(VM_NAME, max_length=63, error_messages={
        "invalid": "A VM name is a hostname: lowercase letters, digits and '-', not starting or ending with '-'."
    }, help_text="A hostname, e.g. web1.")
    cores = forms.IntegerField(min_value=1, max_value=256, initial=1)
    memory = SizeField(min_mib=MIN_MEMORY_MIB, max_mib=4 * 1024 * 1024, initial="1GiB", help_text='e.g. "512M" or "2GiB"')
    disk = SizeField(min_mib=1024, max_mib=64 * 1024 * 1024, initial="10GiB", help_text='root disk, e.g. "20G"')
    image = forms.ModelChoiceField(queryset=None, to_field_name="uuid", required=False, empty_label="(no image: empty disk)")
    networks = forms.ModelMultipleChoiceField(
        queryset=None, to_field_name="uuid", required=False, widget=forms.CheckboxSelectMultiple,
        help_text="None chosen: the public network.",
    )
    ssh_keys = forms.ModelMultipleChoiceField(
        queryset=None, to_field_name="uuid", required=False, widget=forms.CheckboxSelectMultiple, label="SSH keys",
    )
    # Byte for byte to the guest (no stripping), limited in UTF-8 bytes like the API.
    user_data = forms.CharField(required=False, widget=forms.Textarea, strip=False, label="User data (cloud-init)")

    def clean_user_data(self):
        value = self.cleaned_data.get("user_data", "")
        error = user_data_size_error(value)
        if error:
            raise forms.ValidationError(error)
        return value

    def __init__(self, user, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["project"].queryset = projects_of(user)
        self.fields["project"].initial = getattr(default_project(user), "uuid", None)
        images = images_visible_to(user).filter(status=ImageStatus.AVAILABLE)
        self.fields["image"].queryset = images
        # Preselect something that boots: the site's default image, else the first public one. An empty
        # disk stays a choice, never the default.
        default = site_default_image() or images.filter(project__isnull=True).first()
        self.fields["image"].initial = getattr(default, "uuid", None)
        self.fields["networks"].queryset = networks_visible_to(user)
        self.fields["ssh_keys"].queryset = scoped(SSHKey.objects.select_related("project"), user)
        self.fields["ssh_keys"].help_text = format_html(
            'The keys that may log in as root. <a href="{}" target="_blank" rel="noopener">Add a key</a> '
            '(in a new tab; reload this page to choose it).', reverse("ssh-keys"))

    def clean(self):
        data = super().clean()
        project = data.get("project")
        if project is None:
            return data
        for key in data.get("ssh_keys") or []:
            if key.project_id != project.id:
                self.add_error("ssh_keys", f"Key {key.name} belongs to another project.")
        for network in data.get("networks") or []:
            if network.project_id not in (None, project.id):
                self.add_error("networks", f"Network {network.name} belongs to another project.")
        image = data.get("image")
        if image is not None and image.project_id not in (None, project.id):
            self.add_error("image", "That image belongs to another project.")
        return data


def price_quote(project, cores: int, memory_mib: int, disk_mib: int):
    """The monthly price of a VM, from billing if it offers one (UNCLOUD_VM_PRICE_FUNCTION), else None.

    vms may not import billing (billing sits above it), so billing's function is named in settings.
    """
    path = getattr(settings, "UNCLOUD_VM_PRICE_FUNCTION", "")
    if not path:
        return None
    return import_string(path)(project, cores=cores, memory_mib=memory_mib, disk_mib=disk_mib)


def form_price_quote(form: VMForm):
    """The price of what the create form shows: the submitted size when it is valid, else the defaults."""
    if form.is_bound:
        data = getattr(form, "cleaned_data", {})
        if not all(name in data for name in ("project", "cores", "memory", "disk")):
            return None
        return price_quote(data["project"], data["cores"], data["memory"], data["disk"])
    fields = form.fields
    project = fields["project"].queryset.filter(uuid=fields["project"].initial).first()
    if project is None:
        return None
    return price_quote(project, fields["cores"].initial, fields["memory"].clean(fields["memory"].initial),
                       fields["disk"].clean(fields["disk"].initial))


@login_required
def vm_list(request):
    vms = visible_vms(request.user).select_related("project").prefetch_related("nics")
    return render(request, "vms/vm_list.html", {"vms": vms})


@login_required
def vm_status_json(request):
    """Live status for the list and detail pages (polled by a few lines of JS)."""
    vms = visible_vms(request.user).only("uuid", "status", "status_message")
    operations = {}
    running = scoped(Operation.objects.filter(state__in=["pending", "running"]), request.user)
    for operation in running.filter(target_uuid__in=[vm.uuid for vm in vms]).order_by("created"):
        operations[str(operation.target_uuid)] = {"kind": operation.kind, "progress": operation.progress,
                                                  "step": operation.step}
    return JsonResponse({"vms": {
        str(vm.uuid): {"status": vm.status, "label": vm.get_status_display(), "message": vm.status_message,
                       "operation": operations.get(str(vm.uuid))}
        for vm in vms
    }})


@login_required
def vm_create(request):
    form = VMForm(request.user, request.POST or None)
    quote = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        quote = price_quote(data["project"], data["cores"], data["memory"], data["disk"])
        try:
            vm, _ = actions.do_create_vm(
                request.user, data["project"], name=data["name"], cores=data["cores"], memory_mib=data["memory"],
                disk_mib=data["disk"], image=data.get("image"), networks=list(data["networks"]) or None,
                ssh_keys=list(data["ssh_keys"]), user_data=data.get("user_data", ""),
                idempotency_key=request.POST.get("idempotency_key") or None,
            )
        except (Conflict, Unprocessable, ValidationError, QuotaExceeded) as error:
            form.add_error(None, error_text(error))
        else:
            messages.success(request, f"VM {vm.name} is being created.")
            return redirect("vm", uuid=vm.uuid)
    return render(request, "vms/vm_create.html", {
        "form": form, "quote": quote or form_price_quote(form),
        "pricing": bool(getattr(settings, "UNCLOUD_VM_PRICE_FUNCTION", "")),
    })


class ResizeForm(forms.Form):
    cores = forms.IntegerField(min_value=1, max_value=256)
    memory = SizeField(min_mib=MIN_MEMORY_MIB, max_mib=4 * 1024 * 1024, help_text='e.g. "512M" or "2GiB"')
    disk = SizeField(min_mib=1024, max_mib=64 * 1024 * 1024, help_text="root disk; disks only grow")


@login_required
def vm_resize(request, uuid):
    """Resize in two steps: the new size and its monthly price (beside today's) first, then the
    confirmation, which calls do_resize_vm. A confirmation carries the size it was priced for."""
    vm = get_object_or_404(visible_vms(request.user).select_related("project"), uuid=uuid)
    root = vm.disks.filter(role="root").first()
    disk_mib = root.size_mib if root is not None else 1024
    current = {"cores": vm.cores, "memory": format_mib(vm.memory_mib), "disk": format_mib(disk_mib)}
    form = ResizeForm(request.POST or None, initial=current)
    quote, priced = None, ""
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        quote = price_quote(vm.project, data["cores"], data["memory"], data["disk"])
        priced = f"{data['cores']}:{data['memory']}:{data['disk']}"
        # Confirmed is only the size whose price the page showed; changed values are priced first.
        if request.POST.get("priced") == priced:
            try:
                actions.do_resize_vm(request.user, vm, cores=data["cores"], memory_mib=data["memory"],
                                     disk_mib=data["disk"])
            except (Conflict, Unprocessable, ValidationError, QuotaExceeded) as error:
                form.add_error(None, error_text(error))
            else:
                messages.success(request, f"Resize of {vm.name} requested.")
                return redirect("vm", uuid=vm.uuid)
    return render(request, "vms/vm_resize.html", {
        "vm": vm, "form": form, "quote": quote, "priced": priced,
        "current_quote": price_quote(vm.project, vm.cores, vm.memory_mib, disk_mib), "current": current,
        "pricing": bool(getattr(settings, "UNCLOUD_VM_PRICE_FUNCTION", "")),
    })


@login_required
def vm_detail(request, uuid):
    vm = get_object_or_404(
        visible_vms(request.user).select_related("project", "image", "host").prefetch_related(
            "nics__network", "disks", Prefetch("ssh_keys", queryset=SSHKey.objects.order_by("name"))
        ),
        uuid=uuid,
    )
    operations = scoped(Operation.objects.filter(target_uuid=vm.uuid), request.user)[:20]
    return render(request, "vms/vm_detail.html", {"vm": vm, "operations": operations,
                                                  "rebuild_images": rebuild_images(request.user, vm)})


def rebuild_images(user, vm):
    return images_visible_to(user).filter(status=ImageStatus.AVAILABLE).filter(
        Q(project__isnull=True) | Q(project=vm.project_id))


def chosen_rebuild_image(request, vm):
    try:
        image = rebuild_images(request.user, vm).filter(uuid=request.POST.get("image") or None).first()
    except ValidationError:  # not a UUID
        image = None
    if image is None:
        raise ValidationError("Choose an available image to rebuild from.")
    return image


@login_required
@require_POST
def vm_action(request, uuid, verb):
    if verb not in VM_ACTIONS:
        raise Http404
    vm = get_object_or_404(visible_vms(request.user), uuid=uuid)
    function = VM_ACTIONS[verb]
    try:
        if verb == "stop" and request.POST.get("hard") == "1":
            function(request.user, vm, hard=True)
        elif verb == "rebuild":
            function(request.user, vm, chosen_rebuild_image(request, vm))
        else:
            function(request.user, vm)
    except (Conflict, ValidationError, QuotaExceeded) as error:
        messages.error(request, error_text(error))
        return redirect("vm", uuid=vm.uuid)
    if verb == "delete":
        messages.success(request, f"VM {vm.name} is being deleted.")
        return redirect("vms")
    messages.success(request, f"{verb.capitalize()} of {vm.name} requested.")
    return redirect("vm", uuid=vm.uuid)


class SSHKeyForm(forms.Form):
    project = forms.ModelChoiceField(queryset=None, to_field_name="uuid", empty_label=None)
    name = forms.CharField(max_length=100)
    public_key = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), help_text="One line, e.g. ssh-ed25519 AAAA… me@laptop")

    def __init__(self, user, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["project"].queryset = projects_of(user)
        self.fields["project"].initial = getattr(default_project(user), "uuid", None)

    def clean_public_key(self):
        try:
            return parse_public_key(self.cleaned_data["public_key"]).line
        except SSHKeyError as error:
            raise forms.ValidationError(str(error)) from None


@login_required
def ssh_keys(request):
    form = SSHKeyForm(request.user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            key = actions.do_add_ssh_key(request.user, data["project"], data["name"], data["public_key"])
        except (Conflict, Unprocessable, ValidationError, QuotaExceeded) as error:
            form.add_error(None, error_text(error))
        else:
            messages.success(request, f"Key {key.name} added.")
            return redirect("ssh-keys")
    keys = scoped(SSHKey.objects.select_related("project"), request.user)
    return render(request, "vms/ssh_keys.html", {"form": form, "keys": keys})


@login_required
@require_POST
def ssh_key_delete(request, uuid):
    key = get_object_or_404(scoped(SSHKey.objects.all(), request.user), uuid=uuid)
    actions.do_delete_ssh_key(request.user, key)
    messages.success(request, f"Key {key.name} deleted.")
    return redirect("ssh-keys")
