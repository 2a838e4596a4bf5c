"""Pagination for lists that grow large (a project with 10,000 VMs).

DRF's LimitOffsetPagination slices the view's whole queryset: PostgreSQL joins every row's relations
(host, image, project) and sorts those wide rows to cut one page; a page deep into 10,000 VMs sorted
megabytes on disk. Here the page is cut on the primary keys alone (a sort of narrow rows), then only
that page's rows are loaded, with the view's select_related and prefetch_related. One query more per
page, the same number on every page (vms/tests/test_api_at_size.py); bench/api_at_size.py times it.
"""

from rest_framework.pagination import LimitOffsetPagination


class KeysFirstPagination(LimitOffsetPagination):
    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        self.limit = self.get_limit(request)
        if self.limit is None:
            return None
        self.count = self.get_count(queryset)
        self.offset = self.get_offset(request)
        if self.count > self.limit and self.template is not None:
            self.display_page_controls = True
        if self.count == 0 or self.offset > self.count:
            return []
        keys = list(queryset.values_list("pk", flat=True)[self.offset:self.offset + self.limit])
        rows = {row.pk: row for row in queryset.filter(pk__in=keys)}
        return [rows[key] for key in keys if key in rows]  # a row deleted in between is left out
