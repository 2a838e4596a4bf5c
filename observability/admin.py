from django.contrib import admin

from observability.models import JobRun, StepTiming


@admin.register(JobRun)
class JobRunAdmin(admin.ModelAdmin):
    list_display = ("task", "started", "seconds", "succeeded")
    list_filter = ("task", "succeeded")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(StepTiming)
class StepTimingAdmin(admin.ModelAdmin):
    list_display = ("kind", "step", "outcome", "seconds", "ran")
    list_filter = ("kind", "outcome")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
