"""Admin benchmark: server time of the reviewer's heavy pages on a 1,000,000-charge period (SQLite).

    .venv/bin/python benchmarks/admin.py [--charges 1000000] [--runs 7] [--db PATH]

Builds a throwaway SQLite database in a temporary directory (or reuses `--db PATH` when that
file exists, which skips the build): one period with `--charges` charges (bulk inserted
directly, as an import's writer would, about a minute for a million) plus eleven small earlier
periods for the dashboard's twelve-month chart. Then it requests, through Django's test
Client as a logged-in reviewer, after one warm-up request each, and prints the median,
minimum and maximum server time of several runs:

- the charges changelist, first page (all periods, then the big period),
- a filtered page (period + source + review state, and period + flag reason),
- a search (a PI email fragment, a project id: both through the PI/project indexes; a resource
  id, which has no index and scans the period),
- the dashboard (admin index) and the review queue.

The target is 300 ms each. The dashboard's per-period rankings (top PIs and projects) are cached
under the period's fingerprint; the first dashboard after a change computes them, which is
printed once as "cold cache" (not a target). Prints figures for a person to read; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 300.0
BIG_PERIOD = "2025-12"
SOURCES = [
    ("aws", ["Amazon EC2", "Amazon S3", "Amazon RDS", "AWS Lambda", "Amazon EBS", "Amazon CloudWatch"]),
    ("azure", ["Virtual Machines", "Storage", "Azure Monitor", "Bandwidth", "Azure SQL Database"]),
    ("gcp", ["Compute Engine", "Cloud Storage", "BigQuery", "Networking"]),
    ("hpc", ["CPU hours", "GPU hours", "Large-memory hours"]),
    ("storage", ["Project storage", "Archive storage", "Scratch storage"]),
]
SCALE = 10**10  # MoneyField's stored unit on SQLite


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--charges", type=int, default=1_000_000, help="charges in the big period")
    parser.add_argument("--runs", type=int, default=7, help="timed requests per page (median reported)")
    parser.add_argument("--db", help="SQLite file to build or reuse (default: a temporary directory)")
    return parser.parse_args()


def setup_django(db_path: Path, data_dir: Path) -> None:
    os.environ["OPENCHARGEBACK_DATA_DIR"] = str(data_dir)
    os.environ["DATABASE_URL"] = f"sqlite:///{db_path}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "chargeback.settings"
    os.environ.pop("OPENCHARGEBACK_CONFIG", None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def build(charges: int) -> None:
    """Periods, sources, PIs, projects, imports and charges, written with raw batched inserts."""
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.utils import timezone

    from billing.ingest.writer import CHARGE_COLUMNS
    from billing.models import PI, BillingPeriod, Charge, FlagRule, Import, Project, Source

    call_command("migrate", verbosity=0)
    rng = random.Random(2025)
    started = time.perf_counter()
    with transaction.atomic():
        sources = [
            Source.objects.create(
                slug=slug, display_name=slug.upper(), filename_pattern=f"{slug}_*", fund_org="RC-RECOVERY"
            )
            for slug, _ in SOURCES
        ]
        services = {s.pk: names for s, (_, names) in zip(sources, SOURCES, strict=True)}
        pis = PI.objects.bulk_create(
            [PI(email=f"pi{i:04d}@university.example", name=f"PI Number {i}") for i in range(400)]
        )
        projects = Project.objects.bulk_create(
            [
                Project(project_id=f"project-{i:05d}", pi=pis[i % len(pis)], fund_org=f"NSF-2025-{i:04d}")
                for i in range(1200)
            ]
        )
        rule = FlagRule.objects.create(name="test accounts", pattern="^TEST", fields=["fund_org"])
        months = [f"2025-{m:02d}" for m in range(1, 13)]
        periods = {}
        for month in months:
            status = BillingPeriod.Status.FINALIZED if month < "2025-11" else BillingPeriod.Status.OPEN
            periods[month] = BillingPeriod.objects.create(period=month, status=status)

    table = Charge._meta.db_table
    sql = f"INSERT INTO {table} ({', '.join(CHARGE_COLUMNS)}) VALUES ({', '.join(['%s'] * len(CHARGE_COLUMNS))})"
    flag_sql = "INSERT INTO billing_chargeflag (charge_id, reason, rule_id, detail) VALUES (%s, %s, %s, %s)"
    reasons = ["missing_fund_org", "invalid_fund_org", "unattributed", "missing_project", "rule"]
    for month in months:
        period = periods[month]
        count = charges if month == BIG_PERIOD else 2_000 + 150 * months.index(month)
        imports = {
            s.pk: Import.objects.create(
                source=s,
                period=period,
                original_name=f"{s.slug}_{month}.csv",
                sha256=f"{month}-{s.slug}".ljust(64, "0"),
                status=Import.Status.COMPLETED,
                finished_at=timezone.now(),
            )
            for s in sources
        }
        totals = {s.pk: [0, 0, 0, 0] for s in sources}  # charges, flagged, list, billed
        flagged_rows: list[tuple[int, str]] = []
        with transaction.atomic(), connection.cursor() as cursor:
            first_id = (Charge.objects.order_by("-id").values_list("id", flat=True).first() or 0) + 1
            batch = []
            for n in range(count):
                source = sources[n % len(sources)]
                project = projects[rng.randrange(len(projects))]
                pi = pis[(project.pk - projects[0].pk) % len(pis)]
                roll = rng.random()
                state = "ok"
                if period.status == BillingPeriod.Status.OPEN and roll < 0.03:
                    state = "flagged"
                elif roll < 0.035:
                    state = "approved"
                elif roll < 0.04:
                    state = "rejected"
                reason = reasons[n % len(reasons)] if state in ("flagged", "approved", "rejected") else ""
                attributed = reason != "unattributed"
                listed = rng.randrange(1, 500_00) * SCALE // 100
                billed = listed * rng.choice((100, 92, 80, 50, 0)) // 100
                t = totals[source.pk]
                t[0], t[1], t[2], t[3] = t[0] + 1, t[1] + (state == "flagged"), t[2] + listed, t[3] + billed
                if reason:
                    flagged_rows.append((first_id + n, reason))
                batch.append(
                    (
                        period.pk,
                        source.pk,
                        imports[source.pk].pk,
                        pi.pk if attributed else None,
                        project.pk if attributed and reason != "missing_project" else None,
                        pi.email if attributed else "",
                        project.project_id if attributed and reason != "missing_project" else "",
                        "" if reason == "missing_fund_org" or not attributed else project.fund_org,
                        "",
                        f"GRANT-{project.pk % 97:03d}",
                        "",
                        "tags" if attributed else "none",
                        f"arn:{source.slug}:resource/{month}/r-{n:08d}",
                        f"{source.slug}-resource-{n:08d}",
                        rng.choice(services[source.pk]),
                        "Compute",
                        "Usage",
                        f"{100000000000 + (project.pk % 300):012d}",
                        "us-east-1",
                        "",
                        "1.000000",
                        "Hours",
                        listed,
                        billed,
                        billed,
                        billed,
                        rng.randrange(1, 720),
                        f"{month}-01 00:00:00",
                        f"{month}-28 00:00:00",
                        json.dumps({"pi_email": pi.email, "project_id": project.project_id}),
                        state,
                        (f"rule:{rule.name}" if reason == "rule" else reason) if reason else "",
                    )
                )
                if len(batch) >= 5000:
                    cursor.executemany(sql, batch)
                    batch = []
            if batch:
                cursor.executemany(sql, batch)
            cursor.executemany(
                flag_sql,
                [(cid, r, rule.pk if r == "rule" else None, f"benchmark {r}") for cid, r in flagged_rows],
            )
        for pk, (n, flagged, listed, billed) in totals.items():
            Import.objects.filter(pk=imports[pk].pk).update(
                charges_created=n,
                rows_read=n,
                charges_flagged=flagged,
                list_total=Decimal(listed).scaleb(-10),
                billed_total=Decimal(billed).scaleb(-10),
            )
        print(f"  {month}: {count:,} charges", flush=True)
    User.objects.create_superuser("bench", "bench@university.example", "bench")
    print(f"built in {time.perf_counter() - started:.1f} s", flush=True)


def measure(runs: int) -> list[tuple[str, float, float, float, int]]:
    from django.contrib.auth.models import User
    from django.test import Client

    from billing.models import Charge

    client = Client()
    client.force_login(User.objects.get(username="bench"))
    some = (
        Charge.objects.filter(period__period=BIG_PERIOD).order_by("-id").values_list("resource_id", flat=True)
    )
    resource = some[12345 % max(1, some.count())] if some.exists() else "r-"
    pages = [
        ("changelist, first page (all periods)", "/admin/billing/charge/"),
        ("changelist, first page of the period", f"/admin/billing/charge/?period={BIG_PERIOD}"),
        (
            "filtered: period + source + flagged",
            f"/admin/billing/charge/?period={BIG_PERIOD}&source=azure&state=flagged",
        ),
        (
            "filtered: period + flag reason",
            f"/admin/billing/charge/?period={BIG_PERIOD}&reason=invalid_fund_org",
        ),
        ("filtered: period + PI", f"/admin/billing/charge/?period={BIG_PERIOD}&pi=pi0042@university.example"),
        ("search: PI email fragment", f"/admin/billing/charge/?period={BIG_PERIOD}&q=pi0042"),
        ("search: a project id", f"/admin/billing/charge/?period={BIG_PERIOD}&q=project-00442"),
        ("search: a resource id (full scan)", f"/admin/billing/charge/?period={BIG_PERIOD}&q={resource}"),
        ("dashboard (admin index)", f"/admin/?period={BIG_PERIOD}"),
        ("review queue", f"/admin/billing/charge/review/?period={BIG_PERIOD}"),
    ]
    results = []
    from django.core.cache import cache

    cache.clear()
    started = time.perf_counter()
    cold = client.get(f"/admin/?period={BIG_PERIOD}")
    cold_ms = (time.perf_counter() - started) * 1000
    print(
        f"  {'dashboard, cold cache (not a target)':<42} once   {cold_ms:7.1f} ms  (status {cold.status_code})"
    )
    for label, url in pages:
        response = client.get(url)  # warm-up
        status = response.status_code
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
            status = response.status_code if status == 200 else status
        results.append((label, statistics.median(times), min(times), max(times), status))
        print(f"  {label:<42} median {statistics.median(times):7.1f} ms  (status {status})", flush=True)
    return results


def main() -> None:
    args = parse_args()
    tmp = tempfile.mkdtemp(prefix="ocb-admin-bench-")
    db_path = Path(args.db).resolve() if args.db else Path(tmp) / "bench.sqlite3"
    reuse = db_path.is_file()
    setup_django(db_path, Path(tmp))
    if reuse:
        from django.core.management import call_command

        print(f"reusing {db_path}", flush=True)
        call_command("migrate", verbosity=0)
    else:
        print(f"building {args.charges:,} charges in {db_path} ...", flush=True)
        build(args.charges)
    try:
        print(f"measuring ({args.runs} runs each after one warm-up):", flush=True)
        results = measure(args.runs)
    finally:
        from django.db import connections

        connections.close_all()
        shutil.rmtree(tmp, ignore_errors=True)  # the --db file, if given, stays
    print()
    print(f"{'page':<42} {'median':>9} {'min':>9} {'max':>9}  target {TARGET_MS:.0f} ms")
    for label, median, low, high, status in results:
        verdict = (
            "ok" if median <= TARGET_MS and status == 200 else ("SLOW" if status == 200 else f"HTTP {status}")
        )
        print(f"{label:<42} {median:7.1f}ms {low:7.1f}ms {high:7.1f}ms  {verdict}")


if __name__ == "__main__":
    main()
