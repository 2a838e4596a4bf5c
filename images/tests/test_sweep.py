"""The image sweep's upload half (the base-image half runs against a lab host in test_workflows_lab.py)."""

import os
import time

from images.choices import ImageStatus
from images.models import Image
from images.tasks import sweep_all
from uncloud_project.celery import app


def aged(path, seconds):
    path.write_bytes(b"x" * 10)
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def test_stale_uploads_go_and_live_ones_stay(db, image_dirs, settings):
    _, uploads = image_dirs
    uploads.mkdir(parents=True)
    settings.UNCLOUD_UPLOAD_STALE_SECONDS = 3600
    validating = Image.objects.create(name="busy", status=ImageStatus.VALIDATING)
    rejected = Image.objects.create(name="refused", status=ImageStatus.REJECTED)
    stale = [aged(uploads / "incoming-abc123.part", 7200), aged(uploads / f"{rejected.uuid}.upload", 7200),
             aged(uploads / f"{rejected.uuid}.converted.qcow2", 7200),
             aged(uploads / "1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b.upload", 7200)]
    kept = [aged(uploads / "incoming-def456.part", 60),  # an upload still arriving
            aged(uploads / f"{validating.uuid}.upload", 7200),  # its validation has not finished
            aged(uploads / "notes.txt", 7200)]  # not ours to judge

    result = sweep_all()
    assert result["uploads_removed"] == sorted(path.name for path in stale)
    assert [path.exists() for path in stale] == [False] * len(stale)
    assert [path.exists() for path in kept] == [True] * len(kept)
    assert sweep_all()["uploads_removed"] == []


def test_beat_runs_the_sweep():
    entry = app.conf.beat_schedule["sweep-images"]
    assert entry["task"] == "images.sweep" and entry["task"] in app.tasks
