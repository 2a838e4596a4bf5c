"""Signals the agents app sends; apps above it listen (agents never imports them)."""

from django.dispatch import Signal

# A host can take new VMs again (enabled by staff, or answering again after it was down).
# Sent on commit, with sender=Host and host=<the Host>.
host_available = Signal()

# One step of an operation ran (agents/operations.py): sender=Operation, operation=<the Operation>,
# step=<name>, seconds=<float>, outcome="succeeded"|"failed"|"waiting". Sent outside any commit hook:
# a listener must not fail the step (it is sent with send_robust).
operation_step_ran = Signal()

# An operation reached a terminal state (agents/operations.py: _finish, cancel), inside the transaction
# that wrote it: sender=Operation, operation=<the Operation>, state=<terminal state>,
# seconds=<from request to end>. Sent with send_robust: a listener cannot undo the end.
operation_finished = Signal()
