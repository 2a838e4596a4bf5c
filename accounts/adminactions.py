"""What admin actions of every app share: staff change state through the do_* actions, one row at
a time, and see each refusal."""

from django.contrib import admin, messages


def run_action_on_each(request, queryset, action, done: str) -> None:
    """Call one do_* action per selected row; one row's refusal (a Conflict, a quota) is reported
    and does not hide the others'."""
    failed = []
    for row in queryset:
        try:
            action(request.user, row)
        except Exception as error:
            failed.append(f"{row.name}: {getattr(error, 'detail', error)}")
    messages.info(request, f"{done} for {queryset.count() - len(failed)} of {queryset.count()}.")
    for line in failed:
        messages.error(request, line)


def calling(name: str, action, description: str, done: str):
    """An admin action `name` that calls `action(actor, row)` for each selected row."""

    def run(modeladmin, request, queryset):
        run_action_on_each(request, queryset, action, done)

    run.__name__ = name
    return admin.action(description=description)(run)
