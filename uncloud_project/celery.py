import logging
import os
import threading

from celery import Celery
from celery.schedules import crontab
from celery.signals import task_postrun, task_prerun, worker_process_init
from django.conf import settings
from django.db import close_old_connections, connection

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "uncloud_project.settings")

app = Celery("uncloud")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    # A task is acknowledged only after it ran, and a worker killed mid-task gives it back:
    # the Operation row, not the message, decides whether work is left (see agents/operations.py).
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_soft_time_limit=600,
    task_time_limit=660,
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
    result_backend=None,
)
# Each worker process keeps its database connection from task to task: Celery's Django fixup
# would close it around every task, which costs a new PostgreSQL backend (and its cold caches)
# per task. Django's own rules still apply before and after each task: a connection that failed
# or is older than CONN_MAX_AGE is closed, and a reused one is pinged first (CONN_HEALTH_CHECKS).
app.conf["CELERY_DB_REUSE_MAX"] = 10**9


@worker_process_init.connect
def warm_host_connections_in_background(**kwargs):
    """A new worker process connects to the hosts before its first task needs one (agents/hosts.py).
    In a thread of its own: the process takes tasks meanwhile, and a slow host holds only the thread."""
    if settings.UNCLOUD_WORKER_WARM_CONNECTIONS:
        threading.Thread(target=_warm_host_connections, name="warm-host-connections", daemon=True).start()


def _warm_host_connections():
    from agents.hosts import warm_host_connections

    try:
        warm_host_connections()
    except Exception:  # the database not ready yet, say: the first calls connect as before
        logging.getLogger(__name__).warning("could not warm the host connections", exc_info=True)
    finally:
        connection.close()  # this thread's own


@task_prerun.connect
@task_postrun.connect
def recycle_database_connections(sender=None, **kwargs):
    if sender is not None and getattr(sender.request, "is_eager", False):
        return  # inside the caller's request or transaction: not ours to close
    close_old_connections()


if app.conf.broker_url.startswith("filesystem://"):
    # The filesystem transport has no fanout exchange for remote control.
    app.conf.worker_enable_remote_control = False
app.autodiscover_tasks()

app.conf.beat_schedule = {
    # Operations whose worker died or whose message was lost are picked up again.
    "resume-stalled-operations": {"task": "agents.resume_stalled_operations", "schedule": float(settings.UNCLOUD_RESUME_INTERVAL)},
    # Hosts against the database: restart what should run, stop what should not, find strangers.
    "reconcile-hosts": {"task": "vms.reconcile_all", "schedule": float(settings.UNCLOUD_RECONCILE_INTERVAL)},
    # Stale upload files, and base images hosts keep for disks that are all gone (after a grace period).
    "sweep-images": {"task": "images.sweep", "schedule": float(settings.UNCLOUD_IMAGE_SWEEP_INTERVAL)},
    # Billing: the last complete month is billed once (later runs find the bills and make none).
    "billing-monthly-run": {"task": "billing.run_monthly_billing", "schedule": crontab(hour=2, minute=10)},
    "billing-dunning": {"task": "billing.run_dunning", "schedule": crontab(hour=3, minute=10)},
    # The customers' graphs: every host exporter's counters, one sample per VM.
    "sample-vm-metrics": {"task": "observability.sample_vms",
                          "schedule": float(settings.UNCLOUD_METRICS_SAMPLE_INTERVAL)},
    # Proxy hosts (IPv4 proxy and jump host) get their whole state again.
    "sync-proxy-hosts": {"task": "proxy.sync_all", "schedule": float(settings.UNCLOUD_PROXY_SYNC_INTERVAL)},
}
