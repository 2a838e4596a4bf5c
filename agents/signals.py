"""Signals the agents app sends; apps above it listen (agents never imports them)."""

from django.dispatch import Signal

# A host can take new VMs again (enabled by staff, or answering again after it was down).
# Sent on commit, with sender=Host and host=<the Host>.
host_available = Signal()
