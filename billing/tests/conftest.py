"""Billing test fixtures. After every test that touched the database the ledger must sum to zero."""

import os
from datetime import date, datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from accounts import actions as account_actions
from billing import ledger
from billing.actions import account_of_user, do_update_billing_address


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """On SQLite (bin/test runs billing there too) the test database is a file, as the embedded
    default's is: Django's in-memory default shares one cache between connections and answers two
    concurrent writers with "database table is locked" instead of letting the second one wait."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        database.setdefault("TEST", {})["NAME"] = str(settings.DATA_DIR / "test-billing.sqlite3")


@pytest.fixture(autouse=True)
def ledger_sums_to_zero(request):
    marker = request.node.get_closest_marker("django_db")
    transactional = marker is not None and marker.kwargs.get("transaction", False)
    # Asking for the database here makes this check run before the database is torn down.
    request.getfixturevalue("transactional_db" if transactional else "db")
    yield
    assert ledger.ledger_sum() == Decimal("0.00")


def at(year, month, day, hour=0, minute=0) -> datetime:
    """A moment in local time (bills follow local calendar months)."""
    return timezone.make_aware(datetime(year, month, day, hour, minute))


@pytest.fixture
def swiss_account(alice):
    account = account_of_user(alice)
    return do_update_billing_address(alice, account, name="Alice AG", street="Bahnhofstrasse", house_number="1",
                                     postal_code="8001", city="Zürich", country="CH", email="alice@example.ch")


@pytest.fixture
def make_customer(db):
    """make_customer("dora", country="DE", vat_number="") -> (user, project, billing account)."""
    from accounts.models import Project

    def make(username, **address):
        user = account_actions.do_create_user(username, None, email=f"{username}@example.org")
        project = Project.objects.get(owner=user)
        account = account_of_user(user)
        if address:
            defaults = {"name": username.title(), "postal_code": "1000", "city": "Town"}
            do_update_billing_address(user, account, **{**defaults, **address})
        return user, project, account

    return make


JAN = date(2025, 1, 1)
FEB = date(2025, 2, 1)
MAR = date(2025, 3, 1)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# localstripe keeps its state in the fixed file /tmp/localstripe.pickle, loaded at start and written on
# every change: two test runs on one machine (parallel checkouts, CI jobs) read each other's half-written
# file and fail to start. The same localstripe, with its store in a file of this run's own.
LOCALSTRIPE_WITH_OWN_STORE = """
import os, pickle, runpy
from localstripe import resources
path = os.environ["LOCALSTRIPE_STORE"]
def load(self):
    try:
        with open(path, "rb") as f:
            self.clear()
            self.update(pickle.load(f))
    except FileNotFoundError:
        pass
def dump(self):
    with open(path, "wb") as f:
        pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)
resources.Store.try_load_from_disk = load
resources.Store.dump_to_disk = dump
runpy.run_module("localstripe", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="session")
def local_stripe_server():
    """A real local Stripe server (localstripe from PyPI) on a free port: the one allowed stand-in,
    because api.stripe.com is out of reach here. The real `stripe` library talks to it."""
    import socket
    import subprocess
    import sys
    import tempfile
    import time

    port = _free_port()
    store = tempfile.NamedTemporaryFile(prefix="localstripe-", suffix=".pickle", delete=False)
    store.close()
    os.unlink(store.name)
    process = subprocess.Popen([sys.executable, "-c", LOCALSTRIPE_WITH_OWN_STORE, "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "LOCALSTRIPE_STORE": store.name})
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"localstripe did not start: {process.stderr.read().decode()[-2000:]}") from None
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)
    if os.path.exists(store.name):
        os.unlink(store.name)


WEBHOOK_SECRET = "whsec_test_uncloud"


@pytest.fixture
def local_stripe(local_stripe_server, settings):
    settings.STRIPE_SECRET_KEY = "sk_test_uncloud"
    settings.STRIPE_PUBLISHABLE_KEY = "pk_test_uncloud"
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = local_stripe_server
    settings.STRIPE_JS_URL = f"{local_stripe_server}/js.stripe.com/v3/"
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    from billing import stripe_payments

    return stripe_payments.client()


@pytest.fixture
def count_statements(db):
    """count_statements() -> a list that collects every statement sent to PostgreSQL meanwhile.

    Django's query capture does not see COPY (the billing run writes with it); a cursor class on the
    psycopg connection sees execute, executemany and copy alike."""
    from django.db import connection

    from billing.bulk import counting_statements

    with counting_statements(connection) as statements:
        def start():
            statements.clear()
            return statements

        yield start
