"""Admin benchmark: server time of the reviewer's pages on a 1,000,000-charge period, SQLite or PostgreSQL.

    .venv/bin/python benchmarks/admin.py [--charges 1000000] [--runs 7] [--db PATH | --database-url URL]

Builds a throwaway SQLite database in a temporary directory (or reuses `--db PATH` when that
file exists, which skips the build), or uses the PostgreSQL database of `--database-url`
(an existing database; built when it has no charges yet, reused otherwise): one period with
`--charges` charges (written by the import's own writer, COPY on PostgreSQL) plus eleven
small earlier periods for the dashboard's twelve-month chart. Then it requests, through
Django's test Client as a logged-in reviewer, after one warm-up request each, and prints the
median, minimum and maximum server time of several runs, and the median CPU time (this
process, plus the PostgreSQL backend's on PostgreSQL: the figure a busy shared machine
disturbs least):

- the charges changelist, first page (all periods, then the big period),
- filtered pages (period + source + review state, period + flag reason, period + PI),
- searches (a PI email fragment and a project id, through the PI/project indexes; a resource id
  through the trigram index of billing.charge_search; a fragment in one charge of five, read
  newest first; and the hard case, a fragment held by 10,000 charges that are all among the
  oldest of the period, which a newest-first reading reaches last),
- the dashboard (admin index) and the review queue.

Target (issue 16): ≤ 150 ms each after warm-up. Then the first dashboard after a change, target
≤ 300 ms: after a review decision (approving one charge through the admin) and after an import
(1,000 more charges of another file imported into the period the way the admin runs it, which
also refreshes the cached rankings). The very first dashboard of a period (nothing cached yet)
is printed once, not a target. Prints figures for a person to read; asserts nothing.
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
TARGET_MS = 150.0
TARGET_AFTER_CHANGE_MS = 300.0
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
    parser.add_argument("--database-url", default="", help="a PostgreSQL database to build or reuse instead")
    return parser.parse_args()


def setup_django(database_url: str, data_dir: Path) -> None:
    os.environ["OPENCHARGEBACK_DATA_DIR"] = str(data_dir)
    os.environ["DATABASE_URL"] = database_url
    os.environ["CELERY_BROKER_URL"] = ""  # tasks (an import, the rankings) run eagerly, as embedded
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

    from billing.ingest.writer import write_charges
    from billing.models import PI, BillingPeriod, Charge, FlagRule, Import, Project, Source

    sqlite = connection.vendor == "sqlite"

    def money(units: int) -> object:  # the writer's database-ready money: 10^-10 units or decimal text
        return units if sqlite else str(Decimal(units).scaleb(-10))

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

        def rows(
            count: int = count,
            period: BillingPeriod = period,
            imports: dict = imports,
            totals: dict = totals,
            month: str = month,
        ):
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
                yield (
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
                    money(listed),
                    money(billed),
                    money(billed),
                    money(billed),
                    rng.randrange(1, 720),
                    f"{month}-01 00:00:00",
                    f"{month}-28 00:00:00",
                    json.dumps({"pi_email": pi.email, "project_id": project.project_id}),
                    state,
                    (f"rule:{rule.name}" if reason == "rule" else reason) if reason else "",
                )

        with transaction.atomic(), connection.cursor() as cursor:
            write_charges(rows())
            flag_rows = (
                Charge.objects.filter(period=period)
                .exclude(flag_summary="")
                .values_list("id", "flag_summary")
            )
            cursor.executemany(
                flag_sql,
                [
                    (
                        cid,
                        "rule" if r.startswith("rule:") else r,
                        rule.pk if r.startswith("rule:") else None,
                        f"benchmark {r}",
                    )
                    for cid, r in flag_rows
                ],
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


class ServerClock:
    """Wall and CPU time of a request: this process's CPU, plus on PostgreSQL the CPU of the
    database backend serving this connection (same machine, read from /proc)."""

    def __init__(self) -> None:
        from django.db import connection

        self.backend: Path | None = None
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                pid = cursor.fetchone()[0]
            stat = Path(f"/proc/{pid}/stat")
            self.backend = stat if stat.exists() else None
        self.ticks = os.sysconf("SC_CLK_TCK")

    def cpu(self) -> float:
        total = time.process_time()
        if self.backend is not None:
            fields = self.backend.read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / self.ticks
        return total

    def time(self, request) -> tuple[float, float, int]:
        """(wall ms, CPU ms, status) of one request."""
        cpu, started = self.cpu(), time.perf_counter()
        response = request()
        return (time.perf_counter() - started) * 1000, (self.cpu() - cpu) * 1000, response.status_code


def focus_file(path: Path, rows: int) -> Path:
    """A small FOCUS CSV for the big period: `rows` charges of known PIs and projects (new bytes
    each run; the same name, so a later run supersedes the earlier one)."""
    import csv

    stamp = f"{time.time_ns():x}"

    header = [
        "BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd", "ListCost",
        "BilledCost", "ResourceId", "ResourceName", "ServiceName", "SubAccountId", "Tags",
    ]  # fmt: skip
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(header)
        for n in range(rows):
            tags = json.dumps(
                {"pi_email": f"pi{n % 400:04d}@university.example", "project_id": f"project-{n % 1200:05d}"}
            )
            out.writerow(
                [
                    f"{BIG_PERIOD}-01T00:00:00Z",
                    "2026-01-01T00:00:00Z",
                    f"{BIG_PERIOD}-01T00:00:00Z",
                    "2026-01-01T00:00:00Z",
                    "12.50",
                    "10.00",
                    f"late-delivery/{stamp}/vm-{n:06d}",
                    f"late-vm-{n}",
                    "Late compute",
                    "999900001111",
                    tags,
                ]
            )
    return path


def measure(
    runs: int, tmp: Path
) -> tuple[list[tuple[str, list[float], list[float], int]], list[tuple[str, float, float, int]]]:
    """Timed pages after warm-up (label, wall ms, CPU ms, status), and the first dashboards after
    a change (label, wall ms, CPU ms, status)."""
    from django.contrib.auth.models import User
    from django.core.cache import cache
    from django.test import Client

    from billing import services, tasks
    from billing.models import Charge, Source

    client = Client()
    client.force_login(User.objects.get(username="bench"))
    clock = ServerClock()
    some = (
        Charge.objects.filter(period__period=BIG_PERIOD).order_by("-id").values_list("resource_id", flat=True)
    )
    resource = some[12345 % max(1, some.count())] if some.exists() else "r-"
    pages = [
        ("changelist, first page (all periods)", "/admin/billing/charge/"),
        ("changelist, first page of the period", f"/admin/billing/charge/?period={BIG_PERIOD}"),
        ("changelist, page 50 of the period", f"/admin/billing/charge/?period={BIG_PERIOD}&p=50"),
        (
            "filtered: period + source + flagged",
            f"/admin/billing/charge/?period={BIG_PERIOD}&source=azure&state=flagged",
        ),
        (
            "filtered: period + flag reason",
            f"/admin/billing/charge/?period={BIG_PERIOD}&reason=invalid_fund_org",
        ),
        ("filtered: period + PI", f"/admin/billing/charge/?period={BIG_PERIOD}&pi=pi0042@university.example"),
        ("filtered: period + service", f"/admin/billing/charge/?period={BIG_PERIOD}&service=Amazon+EC2"),
        ("search: PI email fragment", f"/admin/billing/charge/?period={BIG_PERIOD}&q=pi0042"),
        ("search: a project id", f"/admin/billing/charge/?period={BIG_PERIOD}&q=project-00442"),
        ("search: a resource id (trigram index)", f"/admin/billing/charge/?period={BIG_PERIOD}&q={resource}"),
        (
            "search: a common fragment (1 charge in 5)",
            f"/admin/billing/charge/?period={BIG_PERIOD}&q=arn:gcp",
        ),
        (
            "search: 10,000 oldest charges (hard case)",
            f"/admin/billing/charge/?period={BIG_PERIOD}&q=resource-0012",
        ),
        (
            "search: flagged + resource id",
            f"/admin/billing/charge/?period={BIG_PERIOD}&state=flagged&q={resource[-10:]}",
        ),
        ("dashboard (admin index)", f"/admin/?period={BIG_PERIOD}"),
        ("review queue", f"/admin/billing/charge/review/?period={BIG_PERIOD}"),
    ]
    cache.clear()
    wall, cpu, status = clock.time(lambda: client.get(f"/admin/?period={BIG_PERIOD}"))
    print(
        f"  {'dashboard, nothing cached (not a target)':<44} once   {wall:7.1f} ms  CPU {cpu:7.1f} ms  (status {status})",
        flush=True,
    )
    results = []
    for label, url in pages:
        client.get(url)  # warm-up
        walls, cpus, status = [], [], 200
        for _ in range(runs):
            wall, cpu, code = clock.time(lambda url=url: client.get(url))
            walls.append(wall)
            cpus.append(cpu)
            status = code if status == 200 else status
        results.append((label, walls, cpus, status))
        print(
            f"  {label:<44} median {statistics.median(walls):7.1f} ms  CPU {statistics.median(cpus):7.1f} ms  (status {status})",
            flush=True,
        )

    after = []
    # A review decision: approve one flagged charge through the admin's decide page.
    charge_id = (
        Charge.objects.filter(period__period=BIG_PERIOD, review_state="flagged")
        .values_list("id", flat=True)
        .first()
    )
    started = time.perf_counter()
    decided = client.post(
        "/admin/billing/charge/decide/",
        {"action": "approve", "ids": [charge_id], "note": "benchmark", "next": "/admin/"},
    )
    decide_ms = (time.perf_counter() - started) * 1000
    wall, cpu, status = clock.time(lambda: client.get(f"/admin/?period={BIG_PERIOD}"))
    after.append(
        (
            f"after a review decision (the decision: {decide_ms:.0f} ms)",
            wall,
            cpu,
            status if decided.status_code == 302 else decided.status_code,
        )
    )
    # An import: 1,000 charges of a new file into the big period, run as the admin runs it.
    source = Source.objects.get(slug="hpc")
    path = focus_file(tmp / f"hpc_late_{BIG_PERIOD}.csv", 1_000)
    started = time.perf_counter()
    record = services.import_create(path=path, source=source, actor_name="benchmark")
    outcome = tasks.import_run.delay(record.pk, BIG_PERIOD).get()  # eager: the import, then the rankings
    import_ms = (time.perf_counter() - started) * 1000
    wall, cpu, status = clock.time(lambda: client.get(f"/admin/?period={BIG_PERIOD}"))
    after.append(
        (
            f"after an import ({outcome['status']}, {import_ms / 1000:.1f} s incl. the rankings)",
            wall,
            cpu,
            status,
        )
    )
    for label, wall, cpu, status in after:
        print(
            f"  first dashboard {label:<60} {wall:7.1f} ms  CPU {cpu:7.1f} ms  (status {status})", flush=True
        )
    return results, after


def main() -> None:
    args = parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ocb-admin-bench-"))
    if args.database_url:
        database_url, db_path = args.database_url, None
    else:
        db_path = Path(args.db).resolve() if args.db else tmp / "bench.sqlite3"
        database_url = f"sqlite:///{db_path}"
    setup_django(database_url, tmp)
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    from billing.models import Charge

    if Charge.objects.exists():
        print(f"reusing the {connection.vendor} database ({db_path or 'PostgreSQL'})", flush=True)
    else:
        print(f"building {args.charges:,} charges in the {connection.vendor} database ...", flush=True)
        build(args.charges)
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE")
        else:
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
    load = os.getloadavg()
    try:
        print(f"measuring ({args.runs} runs each after one warm-up):", flush=True)
        results, after = measure(args.runs, tmp)
    finally:
        from django.db import connections

        connections.close_all()
        shutil.rmtree(tmp, ignore_errors=True)  # the --db file, if given, stays
    print()
    print(
        f"{connection.vendor}: {os.cpu_count()} CPUs; load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    print(
        f"{'page':<44} {'median':>9} {'min':>9} {'max':>9} {'CPU':>9}  target {TARGET_MS:.0f} ms CPU (the median)"
    )
    for label, walls, cpus, status in results:
        cpu = statistics.median(cpus)
        print(
            f"{label:<44} {statistics.median(walls):7.1f}ms {min(walls):7.1f}ms {max(walls):7.1f}ms {cpu:7.1f}ms"
            f"  {verdict(cpu, TARGET_MS, status)}"
        )
    print(
        f"{'first dashboard after a change':<44} {'once':>9} {'':>9} {'':>9} {'CPU':>9}"
        f"  target {TARGET_AFTER_CHANGE_MS:.0f} ms CPU"
    )
    for label, wall, cpu, status in after:
        print(
            f"  {label[:42]:<42} {wall:7.1f}ms {'':>9} {'':>9} {cpu:7.1f}ms  {verdict(cpu, TARGET_AFTER_CHANGE_MS, status)}"
        )


def verdict(cpu_ms: float, target_ms: float, status: int) -> str:
    """Judged on CPU time: wall time on a shared machine counts the other processes' turns too."""
    if status != 200:
        return f"HTTP {status}"
    return "ok" if cpu_ms <= target_ms else "SLOW"


if __name__ == "__main__":
    main()
