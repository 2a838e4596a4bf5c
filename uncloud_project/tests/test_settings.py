"""Settings come from the environment: SQLite and a filesystem broker by default, PostgreSQL/Redis by URL."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]
PROBE = (
    "import django, json; django.setup(); from django.conf import settings; from django.db import connection;"
    "print(json.dumps({'vendor': connection.vendor, 'broker': settings.CELERY_BROKER_URL, 'debug': settings.DEBUG,"
    "'name': str(settings.DATABASES['default']['NAME'])}))"
)


def probe(tmp_path, **env):
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "DEBUG", "SECRET_KEY")}
    clean.update({"DJANGO_SETTINGS_MODULE": "uncloud_project.settings", "UNCLOUD_DATA_DIR": str(tmp_path), **env})
    completed = subprocess.run([sys.executable, "-c", PROBE], cwd=BASE_DIR, env=clean, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    import json

    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_default_is_sqlite_and_filesystem_broker(tmp_path):
    result = probe(tmp_path)
    assert result["vendor"] == "sqlite"
    assert result["name"] == str(tmp_path / "uncloud.sqlite3")
    assert result["broker"].startswith("filesystem://")
    assert result["debug"] is False
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_database_url_selects_postgresql(tmp_path):
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        pytest.fail("the test command runs the suite against PostgreSQL: DATABASE_URL must be set")
    result = probe(tmp_path, DATABASE_URL=url, CELERY_BROKER_URL="redis://127.0.0.1:6379/0")
    assert result["vendor"] == "postgresql"
    assert result["broker"] == "redis://127.0.0.1:6379/0"


def test_bad_boolean_is_refused(tmp_path):
    clean = dict(os.environ, UNCLOUD_DATA_DIR=str(tmp_path), DEBUG="maybe")
    completed = subprocess.run([sys.executable, "-c", PROBE], cwd=BASE_DIR, env=clean, capture_output=True, text=True)
    assert completed.returncode != 0
    assert "DEBUG='maybe' is not a boolean" in completed.stderr


def test_check_deploy_passes_with_env_example(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "CELERY_"))}
    for line in (BASE_DIR / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    env["UNCLOUD_DATA_DIR"] = str(tmp_path)
    # check --deploy does not connect to the database; the URL only has to parse.
    completed = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR, env=env, capture_output=True, text=True,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_filesystem_broker_writes_only_under_the_data_dir(tmp_path):
    # kombu's filesystem transport keeps its broadcast tables in ./control unless told otherwise:
    # under bin/run that was the checkout itself.
    code = ("import django, json; django.setup(); from django.conf import settings;"
            "print(json.dumps(settings.CELERY_BROKER_TRANSPORT_OPTIONS))")
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    clean.update({"DJANGO_SETTINGS_MODULE": "uncloud_project.settings", "UNCLOUD_DATA_DIR": str(tmp_path)})
    completed = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, env=clean, capture_output=True, text=True,
                               check=True)
    import json

    options = json.loads(completed.stdout.strip().splitlines()[-1])
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        assert Path(options[key]).is_relative_to(tmp_path), (key, options[key])


def test_embedded_default_keeps_its_files_to_its_owner(tmp_path):
    """Issue 23.6: var/ held a world-readable SQLite file (TOTP keys, live session ids)."""
    data = tmp_path / "var"
    probe(data)
    # The probe opened the database; migrate-free, so write something as the product would.
    subprocess.run([sys.executable, "-c", "import django; django.setup(); from django.db import connection;"
                    "c = connection.cursor(); c.execute('create table t (x int)'); c.execute('insert into t values (1)')"],
                   cwd=BASE_DIR, env={**os.environ, "DJANGO_SETTINGS_MODULE": "uncloud_project.settings",
                                      "UNCLOUD_DATA_DIR": str(data), "DATABASE_URL": ""}, check=True)
    assert data.stat().st_mode & 0o777 == 0o700
    for name in ("uncloud.sqlite3", "secret_key"):
        assert (data / name).stat().st_mode & 0o077 == 0, name
    # An existing data directory and database from an older release are tightened too.
    data.chmod(0o755)
    (data / "uncloud.sqlite3").chmod(0o644)
    probe(data)
    assert data.stat().st_mode & 0o777 == 0o700 and (data / "uncloud.sqlite3").stat().st_mode & 0o777 == 0o600


def test_redis_behind_sentinel_carries_messages(tmp_path):
    """CELERY_BROKER_URL=sentinel://...: Celery asks a real Sentinel for the master
    (CELERY_BROKER_SENTINEL_MASTER) and a message goes through it and back."""
    import socket
    import time

    def free_port():
        with socket.socket() as probe_socket:
            probe_socket.bind(("127.0.0.1", 0))
            return probe_socket.getsockname()[1]

    master_port, sentinel_port = free_port(), free_port()
    (tmp_path / "sentinel.conf").write_text(f"port {sentinel_port}\nbind 127.0.0.1\n"
                                            f"sentinel monitor uc-test 127.0.0.1 {master_port} 1\n")
    servers = [subprocess.Popen(["redis-server", "--port", str(master_port), "--bind", "127.0.0.1", "--save", "",
                                 "--dir", str(tmp_path)], stdout=subprocess.DEVNULL),
               subprocess.Popen(["redis-server", str(tmp_path / "sentinel.conf"), "--sentinel"],
                                stdout=subprocess.DEVNULL)]
    try:
        code = (
            "import django; django.setup(); from kombu import Connection; from django.conf import settings;"
            "from uncloud_project.celery import app;"
            "print(settings.CELERY_BROKER_TRANSPORT_OPTIONS['master_name']);"
            "connection = app.connection_for_write(); queue = connection.SimpleQueue('uc-sentinel-test');"
            "queue.put({'hello': 'sentinel'}); message = queue.get(timeout=10); message.ack();"
            "print(message.payload['hello']); queue.close(); connection.close()"
        )
        clean = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL",)}
        clean.update({"DJANGO_SETTINGS_MODULE": "uncloud_project.settings", "UNCLOUD_DATA_DIR": str(tmp_path),
                      "CELERY_BROKER_URL": f"sentinel://127.0.0.1:{sentinel_port}",
                      "CELERY_BROKER_SENTINEL_MASTER": "uc-test"})
        deadline = time.monotonic() + 20
        while True:  # until Sentinel has found its master
            completed = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, env=clean, capture_output=True,
                                       text=True, timeout=60)
            if completed.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert completed.returncode == 0, completed.stderr[-2000:]
        assert completed.stdout.split() == ["uc-test", "sentinel"]
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=10)
