"""Benchmark: one monthly billing run over many active orders on PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/billing_run.py \
        --orders 100000 --orders-per-customer 5

Makes a scratch database (uncloud_bench_billing, dropped first), migrates it, bulk-inserts customers
and orders (not timed), then times run_billing() for the last month and counts its SQL queries.
Prints the total time, bills and lines made, and queries per 1,000 bills (the issue's goal: <= 60 s
for 100k orders on a 2-core machine, a constant number of queries per batch).
"""

import argparse
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH_DB = "uncloud_bench_billing"


def prepare_database(url: str, name: str = BENCH_DB) -> str:
    """A fresh scratch database `name` (dropped first) beside the one url names; its URL."""
    import dj_database_url
    import psycopg

    config = dj_database_url.parse(url)
    if "postgres" not in config["ENGINE"]:
        sys.exit("DATABASE_URL must point at PostgreSQL")
    with psycopg.connect(host=config["HOST"], port=config["PORT"] or 5432, user=config["USER"],
                         password=config["PASSWORD"] or None, dbname=config["NAME"], autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    base = url.rsplit("/", 1)[0]
    return f"{base}/{name}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--orders-per-customer", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--profile", action="store_true", help="print where the run's time goes (cProfile)")
    parser.add_argument("--month", help="YYYY-MM to bill (default: last month); the results of two versions"
                        " of the run are comparable for one month")
    args = parser.parse_args()

    os.environ["DATABASE_URL"] = prepare_database(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"))
    os.environ.setdefault("UNCLOUD_DATA_DIR", str(ROOT / "var" / "bench-billing"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "uncloud_project.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from datetime import date, timedelta
    from decimal import Decimal

    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from accounts.models import Project
    from billing import ledger
    from billing.bulk import counting_statements
    from billing.models import BillingAccount, Order, Price, Product
    from billing.periods import local_midnight
    from billing.run import run_billing

    call_command("migrate", verbosity=0)
    customers = args.orders // args.orders_per_customer
    started = time.perf_counter()
    User = get_user_model()
    User.objects.bulk_create(User(username=f"bench{i}", password="!") for i in range(customers))
    users = list(User.objects.filter(username__startswith="bench").order_by("id"))
    Project.objects.bulk_create(Project(owner=user, name="default") for user in users)
    projects = {p.owner_id: p for p in Project.objects.all()}
    countries = ["CH"] * 6 + ["DE", "FR", "US", "AT"]
    # Seeded: the same customers and orders every time, so runs of two versions make the same bills.
    rng = random.Random(1)
    BillingAccount.objects.bulk_create(
        BillingAccount(owner=user, name=f"Customer {i}", country=rng.choice(countries),
                       vat_number="DE123456789" if i % 7 == 0 else "", postal_code="8000", city="Zürich")
        for i, user in enumerate(users)
    )
    accounts = list(BillingAccount.objects.order_by("id"))
    vm, hourly, ipv4 = (Product.objects.get(code=c) for c in ("vm", "vm-hourly", "ipv4"))
    prices = {p.product_id: p for p in Price.objects.all()}
    if args.month:
        year, month_number = map(int, args.month.split("-"))
        month = date(year, month_number, 1)
        today = (month + timedelta(days=32)).replace(day=1)
    else:
        today = date.today().replace(day=1)
        month = (today - timedelta(days=1)).replace(day=1)
    begin = local_midnight(month)
    orders = []
    for account in accounts:
        for n in range(args.orders_per_customer):
            product = rng.choice([vm, vm, vm, hourly, ipv4])
            starts = begin - timedelta(days=rng.randint(-20, 400), seconds=rng.randint(0, 86400))
            ends = starts + timedelta(days=rng.randint(1, 60)) if rng.random() < 0.2 else None
            if ends is not None and ends < begin:
                ends = None
            orders.append(Order(
                account=account, project=projects[account.owner_id], product=product, price=prices[product.pk],
                description=f"{product.name} {n}", cores=2, memory_mib=2048, disk_mib=20480,
                amount=Decimal("17.00") if product == vm else Decimal("0.0238") if product == hourly else Decimal("2"),
                starts_at=starts, ends_at=ends,
            ))
    Order.objects.bulk_create(orders, batch_size=5000)
    print(f"setup: {customers} customers, {len(orders)} orders in {time.perf_counter() - started:.1f} s "
          "(not timed)", file=sys.stderr)

    queries = []

    def count(execute, sql, params, many, context):
        queries.append(sql)
        return execute(sql, params, many, context)

    # Django's execute_wrapper does not see COPY; counting_statements sees every statement.
    with counting_statements(connection) as statements, connection.execute_wrapper(count):
        import cProfile
        import pstats

        profile = cProfile.Profile() if args.profile else None
        started = time.perf_counter()
        if profile:
            profile.enable()
        result = run_billing(month, today=today, batch_size=args.batch_size, charge_cards=False)
        elapsed = time.perf_counter() - started
        if profile:
            profile.disable()
            pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(20)
    batches = -(-result.bills_created // args.batch_size)
    print(f"billing run for {month:%Y-%m}: {len(orders)} orders, {result.bills_created} bills, "
          f"{result.lines_created} lines")
    print(f"total time: {elapsed:.1f} s ({result.bills_created / elapsed:.0f} bills/s)")
    print(f"queries: {len(queries)} in all, {len(queries) / max(1, result.bills_created) * 1000:.1f} per 1,000 bills,"
          f" {len(queries) / max(1, batches):.1f} per batch of {args.batch_size} ({batches} batches)")
    print(f"statements incl. COPY: {len(statements)} in all,"
          f" {len(statements) / max(1, result.bills_created) * 1000:.1f} per 1,000 bills")
    from django.db.models import Count, Sum

    from billing.models import Bill, BillLine
    totals = Bill.objects.aggregate(bills=Count("id"), total=Sum("total"), vat=Sum("vat_amount"),
                                    last_number=Count("number", distinct=True))
    print(f"bills: {totals['bills']} (distinct numbers {totals['last_number']}), totals {totals['total']},"
          f" VAT {totals['vat']}, line amounts {BillLine.objects.aggregate(s=Sum('amount'))['s']}")
    print(f"ledger sum: {ledger.ledger_sum()} (must be 0.00); cpus: {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    started = time.perf_counter()
    again = run_billing(month, today=today, batch_size=args.batch_size, charge_cards=False)
    print(f"second run: {again.bills_created} bills in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
