"""Per-project quotas. Callers count their own usage (accounts never imports the apps above it)."""

from dataclasses import dataclass, fields

from django.conf import settings

from accounts.models import Project


@dataclass(frozen=True)
class Usage:
    vms: int = 0
    cores: int = 0
    memory_mib: int = 0
    disk_mib: int = 0
    ipv4: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


_LABELS = {
    "vms": ("VMs", ""), "cores": ("cores", ""), "memory_mib": ("memory", " MiB"),
    "disk_mib": ("disk", " MiB"), "ipv4": ("IPv4 addresses", ""),
}


class QuotaExceeded(Exception):
    """A domain error like accounts.errors.Conflict: the API answers it 403, the portal shows it on the form."""

    def __init__(self, project: Project, exceeded: list[tuple[str, int, int, int]]):
        parts = []
        for resource, used, asked, limit in exceeded:
            label, unit = _LABELS[resource]
            parts.append(f"{label}: {used}{unit} in use + {asked}{unit} requested > quota {limit}{unit}")
        self.exceeded = exceeded
        super().__init__(f"Quota of project {project.name!r} exceeded ({'; '.join(parts)}). Ask staff to raise it.")


def default_quota() -> dict:
    return {
        "quota_vms": settings.UNCLOUD_DEFAULT_QUOTA_VMS,
        "quota_cores": settings.UNCLOUD_DEFAULT_QUOTA_CORES,
        "quota_memory_mib": settings.UNCLOUD_DEFAULT_QUOTA_MEMORY_MIB,
        "quota_disk_mib": settings.UNCLOUD_DEFAULT_QUOTA_DISK_MIB,
        "quota_ipv4": settings.UNCLOUD_DEFAULT_QUOTA_IPV4,
    }


def limits_of(project: Project) -> Usage:
    return Usage(
        vms=project.quota_vms, cores=project.quota_cores, memory_mib=project.quota_memory_mib,
        disk_mib=project.quota_disk_mib, ipv4=project.quota_ipv4,
    )


def check_quota(project: Project, used: Usage, requested: Usage) -> None:
    """Raise QuotaExceeded when used + requested passes a limit.

    The caller holds the project row locked (select_for_update) while it counts `used` and writes
    the new resource, so two concurrent requests cannot both squeeze under the same limit.
    """
    limits = limits_of(project)
    exceeded = []
    for f in fields(Usage):
        asked = getattr(requested, f.name)
        if asked <= 0:
            continue
        in_use, limit = getattr(used, f.name), getattr(limits, f.name)
        if in_use + asked > limit:
            exceeded.append((f.name, in_use, asked, limit))
    if exceeded:
        raise QuotaExceeded(project, exceeded)


def lock_project(project: Project) -> Project:
    # FOR NO KEY UPDATE: creates and quota checks still take turns, but a row that merely names the
    # project (an audit row, an operation) never waits for this lock (vms/scheduler.py's lock order).
    return Project.objects.select_for_update(no_key=True).get(pk=project.pk)
