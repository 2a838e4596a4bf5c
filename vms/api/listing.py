"""The VM list's read path: a page of VMs in one SQL statement, as plain rows.

Through VMSerializer a page of 100 VMs built some 700 model instances (VM, project, image, host,
NICs and their networks, keys, disks) from 6 queries, and DRF walked every field of every one:
at 10,000 VMs a page took 84/358 ms (p50/p95), of which SQL 31 ms (bench/api_at_size.py). Here
PostgreSQL returns the page's rows with their keys, NICs and root disk as arrays beside each row, and
the whole filtered count beside them: the page is one query whatever its size or offset. Which VMs
are visible (the tenant scope, the filters, deleted or not) is still the view's queryset, compiled
by Django into the statement. The answer is the serializer's, field for field
(vms/tests/test_api_at_size.py compares the two for VMs with every kind of field); VMSerializer
stays the single-VM path and the schema's description of this one.
"""

from django.db import connection
from django.utils import timezone
from rest_framework.fields import DateTimeField

from accounts.api.pagination import KeysFirstPagination

# The page's keys and the whole list's count in one pass over the visible rows (the window is
# counted before LIMIT), then the wide columns, keys, NICs and root disk for those rows only. The
# order is VM.Meta.ordering (name, id); NICs by index and keys by name, id, as their models order
# them for the serializer. UUIDs leave PostgreSQL as text, as the serializer writes them; addresses
# as Django reads inet (text without the /128 that a cast to text would add).
_PAGE_SQL = """
WITH page AS (
    SELECT visible.id, count(*) OVER () AS total FROM ({visible}) AS visible
    ORDER BY visible.name, visible.id LIMIT %s OFFSET %s
)
SELECT page.total, vm.uuid::text, project.uuid::text, vm.name, vm.cores, vm.memory_mib, image.uuid::text,
       vm.desired_state, vm.status, vm.status_message, host.name, vm.suspended_reason, vm.restart_count,
       vm.created, vm.updated,
       (SELECT disk.size_mib FROM images_disk disk WHERE disk.vm_id = vm.id AND disk.role = 'root'),
       ARRAY(SELECT sshkey.uuid::text FROM vms_vm_ssh_keys link JOIN vms_sshkey sshkey ON sshkey.id = link.sshkey_id
             WHERE link.vm_id = vm.id ORDER BY sshkey.name, sshkey.id),
       nics.uuids, nics.networks, nics.macs, nics.addresses
FROM page
JOIN vms_vm vm ON vm.id = page.id
JOIN accounts_project project ON project.id = vm.project_id
LEFT JOIN images_image image ON image.id = vm.image_id
LEFT JOIN agents_host host ON host.id = vm.host_id
LEFT JOIN LATERAL (
    SELECT array_agg(nic.uuid::text ORDER BY nic.index) AS uuids,
           array_agg(network.uuid::text ORDER BY nic.index) AS networks,
           array_agg(nic.mac ORDER BY nic.index) AS macs,
           array_agg(nic.ipv6_address ORDER BY nic.index) AS addresses
    FROM networks_nic nic JOIN networks_network network ON network.id = nic.network_id
    WHERE nic.vm_id = vm.id
) AS nics ON true
ORDER BY vm.name, vm.id
"""


def vm_page(vms, offset: int, limit: int) -> tuple[int | None, list[dict]]:
    """(how many VMs `vms` holds, the answers of those in [offset, offset + limit)) by name. The
    count is None when the page is empty (no row to carry it)."""
    visible, params = vms.select_related(None).prefetch_related(None).order_by().values("id", "name").query \
        .sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(_PAGE_SQL.format(visible=visible), (*params, limit, offset))
        rows = cursor.fetchall()
    # The serializer's created/updated formatting (ISO 8601 in the current time zone), that zone
    # looked up once a page rather than twice a VM.
    timestamp = DateTimeField(default_timezone=timezone.get_current_timezone())
    answers = []
    for (_, uuid, project, name, cores, memory_mib, image, desired_state, status, status_message, host,
         suspended_reason, restart_count, created, updated, disk_mib, ssh_keys, nic_uuids, nic_networks, nic_macs,
         nic_addresses) in rows:
        addresses = nic_addresses or []
        answers.append({
            "uuid": uuid, "project": project, "name": name, "cores": cores, "memory_mib": memory_mib,
            "disk_mib": disk_mib, "image": image, "ssh_keys": ssh_keys, "desired_state": desired_state,
            "status": status, "status_message": status_message, "host": host, "suspended_reason": suspended_reason,
            "restart_count": restart_count,
            "nics": [{"uuid": nic, "network": network, "mac": mac, "ipv6_address": address}
                     for nic, network, mac, address in zip(nic_uuids or [], nic_networks or [], nic_macs or [],
                                                           addresses, strict=True)],
            "ipv6_addresses": addresses,
            "created": timestamp.to_representation(created), "updated": timestamp.to_representation(updated),
        })
    return (rows[0][0] if rows else None), answers


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
