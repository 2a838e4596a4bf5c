"""The VM list's read path: a page of VMs in one SQL statement, as plain rows.

Through VMSerializer a page of 100 VMs built some 700 model instances (VM, project, image, host,
NICs and their networks, keys, disks) from 6 queries, and DRF walked every field of every one:
at 10,000 VMs a page took 84/358 ms (p50/p95), of which SQL 31 ms (bench/api_at_size.py). Here
PostgreSQL returns the page's rows with their keys, NICs and root disk as arrays beside each row, and
the whole filtered count beside them (a window over the same WHERE): the page is one query whatever
its size or offset. The answer is the serializer's, field for field (vms/tests/test_api_at_size.py
compares the two for VMs with every kind of field); VMSerializer stays the single-VM path and the
schema's description of this one.
"""

from django.contrib.postgres.expressions import ArraySubquery
from django.db.models import F, Func, IntegerField, OuterRef, Subquery
from django.utils import timezone
from rest_framework.fields import DateTimeField

from accounts.api.pagination import KeysFirstPagination
from images.models import Disk
from networks.models import NIC
from vms.models import VM, SSHKey

_COLUMNS = ("uuid", "project__uuid", "name", "cores", "memory_mib", "image__uuid", "desired_state", "status",
            "status_message", "host__name", "suspended_reason", "restart_count", "created", "updated")


def _text(value):
    return None if value is None else str(value)


def vm_page(vms, offset: int, limit: int) -> tuple[int | None, list[dict]]:
    """(how many VMs `vms` holds, the answers of those in [offset, offset + limit)) in `vms`'s
    order. The count is None when the page is empty (nothing to carry it)."""
    # The page is cut on the keys alone (a sort of narrow rows) in a subquery; the wide columns and
    # the arrays are made for its rows only (beside an OFFSET they would be made for every row skipped).
    page_keys = vms.select_related(None).prefetch_related(None).values("pk")[offset:offset + limit]
    # COUNT as a plain function, not an aggregate: Django adds no GROUP BY, PostgreSQL counts the
    # filtered rows once (an InitPlan) for the whole page.
    total = vms.select_related(None).prefetch_related(None).order_by().annotate(
        listed_total=Func(F("pk"), function="COUNT", output_field=IntegerField())).values("listed_total")
    # The same orders as the serializer's: NICs by index, keys by name (their model's ordering).
    nics = NIC.objects.filter(vm=OuterRef("pk")).order_by("index")
    rows = VM.objects.filter(pk__in=page_keys).order_by(*vms.query.order_by or VM._meta.ordering).annotate(
        listed_total=Subquery(total),
        root_disk_mib=Subquery(Disk.objects.filter(vm=OuterRef("pk"), role="root").values("size_mib")[:1]),
        key_uuids=ArraySubquery(SSHKey.objects.filter(vms=OuterRef("pk")).order_by("name", "id").values("uuid")),
        nic_uuids=ArraySubquery(nics.values("uuid")),
        nic_networks=ArraySubquery(nics.values("network__uuid")),
        nic_macs=ArraySubquery(nics.values("mac")),
        nic_addresses=ArraySubquery(nics.values("ipv6_address")),
    ).values(*_COLUMNS, "listed_total", "root_disk_mib", "key_uuids", "nic_uuids", "nic_networks", "nic_macs",
             "nic_addresses")
    # The serializer's created/updated formatting (ISO 8601 in the current time zone), that zone
    # looked up once a page rather than twice a VM.
    timestamp = DateTimeField(default_timezone=timezone.get_current_timezone())
    answers, count = [], None
    for row in rows:
        count = row["listed_total"]
        addresses = [_text(address) for address in row["nic_addresses"]]
        answers.append({
            "uuid": str(row["uuid"]), "project": str(row["project__uuid"]), "name": row["name"],
            "cores": row["cores"], "memory_mib": row["memory_mib"], "disk_mib": row["root_disk_mib"],
            "image": _text(row["image__uuid"]), "ssh_keys": [str(key) for key in row["key_uuids"]],
            "desired_state": row["desired_state"], "status": row["status"], "status_message": row["status_message"],
            "host": row["host__name"], "suspended_reason": row["suspended_reason"],
            "restart_count": row["restart_count"],
            "nics": [{"uuid": str(uuid), "network": str(network), "mac": mac, "ipv6_address": address}
                     for uuid, network, mac, address in zip(row["nic_uuids"], row["nic_networks"], row["nic_macs"],
                                                            addresses, strict=True)],
            "ipv6_addresses": addresses,
            "created": timestamp.to_representation(row["created"]),
            "updated": timestamp.to_representation(row["updated"]),
        })
    return count, answers


class VMListPagination(KeysFirstPagination):
    """limit/offset as before (the same `count`, `next` and `previous`), the page cut by vm_page."""

    def paginate_vms(self, vms, request) -> list[dict]:
        self.request = request
        self.limit = self.get_limit(request)
        self.offset = self.get_offset(request)
        count, answers = vm_page(vms, self.offset, self.limit)
        # Past the last page (or an empty list) no row carries the count: one query more, only then.
        self.count = count if count is not None else (vms.count() if self.offset else 0)
        if self.count > self.limit and self.template is not None:
            self.display_page_controls = True  # the browsable API's page links, as LimitOffsetPagination does
        return answers
