"""Test hypervisors in network namespaces: see hosts.py, fixtures.py and `python -m tests.lab`."""
from .hosts import GuestNamespace, Lab, LabHost, cleanup_stale, lab_unavailable_reason

__all__ = ["GuestNamespace", "Lab", "LabHost", "cleanup_stale", "lab_unavailable_reason"]
