from django.contrib import admin

from observability.models import JobStat, StepDuration


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(JobStat)
class JobStatAdmin(ReadOnlyAdmin):
    list_display = ("task", "runs", "failures", "last_started", "last_seconds", "last_succeeded")


@admin.register(StepDuration)
class StepDurationAdmin(ReadOnlyAdmin):
    list_display = ("kind", "step", "outcome", "bucket", "count", "seconds")
    list_filter = ("kind", "outcome")
