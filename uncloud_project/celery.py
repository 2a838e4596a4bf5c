import os

from celery import Celery
from celery.schedules import crontab
from django.conf import settings

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
if app.conf.broker_url.startswith("filesystem://"):
    # The filesystem transport has no fanout exchange for remote control.
    app.conf.worker_enable_remote_control = False
app.autodiscover_tasks()

app.conf.beat_schedule = {
    # Operations whose worker died or whose message was lost are picked up again.
    "resume-stalled-operations": {"task": "agents.resume_stalled_operations", "schedule": float(settings.UNCLOUD_RESUME_INTERVAL)},
    # Hosts against the database: restart what should run, stop what should not, find strangers.
    "reconcile-hosts": {"task": "vms.reconcile_all", "schedule": float(settings.UNCLOUD_RECONCILE_INTERVAL)},
    # Billing: the last complete month is billed once (later runs find the bills and make none).
    "billing-monthly-run": {"task": "billing.run_monthly_billing", "schedule": crontab(hour=2, minute=10)},
    "billing-dunning": {"task": "billing.run_dunning", "schedule": crontab(hour=3, minute=10)},
}
