"""Billing's own signals: actions announce, the policies above them (dunning) listen (connected in apps.py)."""

from django.dispatch import Signal

# Sent after the commit of a transaction that paid or cancelled bills: account_id.
bills_settled = Signal()
