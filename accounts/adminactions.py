"""What admin actions of every app share."""

from django.contrib import messages


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
