from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db import transaction
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode

from accounts import actions
from accounts.models import APIToken, AuditEntry, Identity, Invitation, Membership, Project, is_directory_user
from accounts.quotas import default_quota


def _portal_login(request, extra_context=None):
    # One login for everyone: the portal's, with rate limiting and the second factor.
    return redirect(f"{reverse('login')}?{urlencode({'next': request.GET.get('next', reverse('admin:index'))})}")


def _staff_with_second_factor(request):
    user = request.user
    return user.is_active and user.is_staff and user.is_verified()


admin.site.login = _portal_login
admin.site.has_permission = _staff_with_second_factor


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]
    fields = ["user", "role", "created"]
    readonly_fields = ["created"]


class QuotaForm(forms.Form):
    quota_vms = forms.IntegerField(min_value=0, required=False, label="VMs")
    quota_cores = forms.IntegerField(min_value=0, required=False, label="Cores")
    quota_memory_mib = forms.IntegerField(min_value=0, required=False, label="Memory (MiB)")
    quota_disk_mib = forms.IntegerField(min_value=0, required=False, label="Disk (MiB)")
    quota_ipv4 = forms.IntegerField(min_value=0, required=False, label="IPv4 addresses")


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "quota_vms", "quota_cores", "quota_memory_mib", "quota_disk_mib", "quota_ipv4",
                    "created"]
    list_filter = ["created", "owner__is_staff"]
    search_fields = ["name", "owner__username", "owner__email", "uuid", "members__username"]
    inlines = [MembershipInline]
    readonly_fields = ["uuid", "created"]
    fields = ["name", "owner", "uuid", "created", *actions.QUOTA_FIELDS]
    autocomplete_fields = ["owner"]
    actions = ["set_quotas"]

    def get_changeform_initial_data(self, request):
        return {**default_quota(), **super().get_changeform_initial_data(request)}

    @transaction.atomic
    def save_model(self, request, obj, form, change):
        # Through the actions, so every change lands in the audit log.
        quotas = {name: form.cleaned_data[name] for name in actions.QUOTA_FIELDS}
        if not change:
            created = actions.do_create_project(obj.owner, obj.name, actor=request.user)
            obj.pk, obj.uuid, obj.created = created.pk, created.uuid, created.created
            actions.do_set_quota(request.user, created, **quotas)
            return
        current = Project.objects.get(pk=obj.pk)
        if "name" in form.changed_data:
            actions.do_rename_project(request.user, current, obj.name)
        changed = {name: value for name, value in quotas.items() if name in form.changed_data}
        if changed:
            actions.do_set_quota(request.user, current, **changed)

    def save_formset(self, request, form, formset, change):
        project = form.instance
        # The admin's change message reads these; the memberships go through the audited actions instead.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for membership_form in formset.forms:
            if not membership_form.has_changed() and membership_form not in formset.deleted_forms:
                continue
            membership = membership_form.instance
            if membership_form in formset.deleted_forms:
                if membership.pk:
                    actions.do_remove_member(request.user, project, membership.user)
            elif membership.pk is None and membership_form.cleaned_data.get("user"):
                actions.do_add_member(request.user, project, membership_form.cleaned_data["user"])
            elif membership.pk:
                membership_form.save()

    @admin.action(description="Set quotas of the selected projects…")
    def set_quotas(self, request, queryset):
        if "apply" in request.POST:
            form = QuotaForm(request.POST)
            if form.is_valid():
                limits = {name: value for name, value in form.cleaned_data.items() if value is not None}
                for project in queryset:
                    actions.do_set_quota(request.user, project, **limits)
                self.message_user(request, f"Quotas of {queryset.count()} project(s) set.", messages.SUCCESS)
                return None
        else:
            form = QuotaForm()
        return render(request, "admin/accounts/set_quotas.html", {
            **self.admin_site.each_context(request), "form": form, "projects": queryset,
            "action_checkbox_name": ACTION_CHECKBOX_NAME, "title": "Set quotas",
        })


@admin.register(APIToken)
class APITokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "key_prefix", "scope", "created", "last_used", "expires", "revoked"]
    list_filter = ["scope", ("revoked", admin.EmptyFieldListFilter), ("expires", admin.EmptyFieldListFilter)]
    search_fields = ["name", "user__username", "key_prefix"]
    readonly_fields = ["uuid", "key_prefix", "created", "last_used", "user", "name", "scope", "expires", "revoked"]
    exclude = ["key_hash"]
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False  # tokens are made through the API/portal so the raw key is shown once

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset):
        for token in queryset:
            actions.do_revoke_token(request.user, token)
        self.message_user(request, f"Revoked {queryset.count()} token(s).")


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ["email", "project", "invited_by", "created", "expires", "accepted"]
    list_filter = [("accepted", admin.EmptyFieldListFilter)]
    search_fields = ["email", "project__name"]
    readonly_fields = [f.name for f in Invitation._meta.fields if f.name != "key_hash"]
    exclude = ["key_hash"]

    def has_add_permission(self, request):
        return False  # invitations are sent from the project page, which mails the link


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ["created", "actor", "project", "action", "target_kind", "target_uuid"]
    list_filter = ["action", "target_kind", "created"]
    search_fields = ["actor__username", "target_uuid", "action", "project__name"]
    readonly_fields = [f.name for f in AuditEntry._meta.fields]
    date_hierarchy = "created"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class IdentityInline(admin.StackedInline):
    model = Identity
    can_delete = False
    readonly_fields = ["origin", "directory_dn", "email_verified", "created"]
    fields = readonly_fields

    def has_add_permission(self, request, obj=None):
        return False


class UncloudUserAdmin(UserAdmin):
    """Django's user admin, showing where each user comes from; directory users get no local password."""

    inlines = [*UserAdmin.inlines, IdentityInline]
    list_display = [*UserAdmin.list_display, "origin"]
    list_filter = [*UserAdmin.list_filter, "identity__origin"]

    @admin.display(description="Origin", ordering="identity__origin")
    def origin(self, user):
        identity = getattr(user, "identity", None)
        return identity.get_origin_display() if identity else "Local (password in uncloud)"

    def user_change_password(self, request, id, form_url=""):
        user = self.get_object(request, id)
        if user is not None and is_directory_user(user):
            self.message_user(request, f"{user.username} logs in through the directory; change the password there.",
                              messages.ERROR)
            return redirect(reverse("admin:auth_user_change", args=[user.pk]))
        response = super().user_change_password(request, id, form_url)
        if request.method == "POST" and response.status_code == 302 and user is not None:
            # A new password set by staff ends every token made with the old one, as a reset does.
            actions.do_revoke_all_tokens(request.user, user, reason="admin password change")
        return response


admin.site.unregister(get_user_model())
admin.site.register(get_user_model(), UncloudUserAdmin)
