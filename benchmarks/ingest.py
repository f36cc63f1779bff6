"""Ingest benchmark: a large synthetic FOCUS file into SQLite and PostgreSQL.

    .venv/bin/python benchmarks/ingest.py [--rows 1000000] [--skip-postgres] [--subsidy]

The file comes from ../shared/tools/focus_synth.py (AWS, daily grain by default) and is cached
under benchmarks/out/ (git-ignored), so later runs skip generating it. Each database run is a
fresh child process with its own data directory and database, so the peak memory reported
(ru_maxrss of that child) belongs to that run alone. PostgreSQL runs when 127.0.0.1:5432
answers: a database is created for the run and dropped afterwards.

Prints rows, charges, seconds, rows/s, peak MB, the import's own timing breakdown and whether
Σ billed equals the generator's manifest. Asserts nothing; compare figures on one machine only.

`--subsidy` puts a 25 % subsidy on the source first, so every attributed charge is subsidised:
the memory of that path at scale (with `--grain hourly --rows 5000000 --baseline-rows 1000000`).
What the subsidy paid is added back before the comparison with the manifest.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Generated files are large (771 MB at 1M rows, ~4 GB at 5M hourly): OPENCHARGEBACK_BENCH_CACHE
# puts them elsewhere than benchmarks/out/.
OUT = Path(os.environ.get("OPENCHARGEBACK_BENCH_CACHE") or Path(__file__).resolve().parent / "out")
# The generator lives beside the repository; a worktree elsewhere names it with OPENCHARGEBACK_FOCUS_SYNTH.
SYNTH = Path(
    os.environ.get("OPENCHARGEBACK_FOCUS_SYNTH") or ROOT.parent / "shared" / "tools" / "focus_synth.py"
)
POSTGRES_SERVER = "postgres://postgres@127.0.0.1:5432"
RESULT_MARK = "BENCHMARK-RESULT "
SUBSIDY_ENV = "OPENCHARGEBACK_BENCH_SUBSIDY"
TARGET_MB = 1536.0
# The import against the floor (pyarrow's bare read of the file plus a bare insert of its rows).
TARGET_RATIO = {"sqlite": 1.3, "postgresql": 1.5}
# Peak memory at 5M rows against the peak at 1M rows.
TARGET_PEAK_GROWTH = 1.2


def synthetic_file(rows: int, provider: str, grain: str, seed: int) -> tuple[Path, dict]:
    """The cached synthetic file and its manifest, generated on first use."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{provider}_2025-01_{rows}_{grain}_seed{seed}.csv"
    manifest = Path(f"{path}.manifest.json")
    if not (path.is_file() and manifest.is_file()):
        print(f"generating {path.name} ({rows:,} rows, {grain}) ...", flush=True)
        started = time.perf_counter()
        partial = path.with_name(f"partial-{os.getpid()}-{path.name}")
        subprocess.run(
            [
                sys.executable,
                str(SYNTH),
                str(partial),
                f"--rows={rows}",
                f"--provider={provider}",
                f"--grain={grain}",
                f"--seed={seed}",
            ],
            check=True,
        )
        Path(f"{partial}.manifest.json").replace(manifest)
        partial.replace(path)
        print(f"  generated in {time.perf_counter() - started:.1f} s", flush=True)
    else:
        print(f"using cached {path}", flush=True)
    return path, json.loads(manifest.read_text())


# --- the child: one import into one fresh database ------------------------------------------------


def child(file: Path, provider: str) -> None:
    """Runs in a fresh process with DATABASE_URL and OPENCHARGEBACK_DATA_DIR set by the parent."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chargeback.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.db.models import Sum

    from billing import services
    from billing.models import Charge, Import
    from billing.rating.models import ChargeSubsidy

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    migrate_seconds = time.perf_counter() - started
    services.source_create(slug=provider)
    subsidised = bool(os.environ.get(SUBSIDY_ENV))
    if subsidised:
        from billing.rating import services as rating_services

        # Every attributed charge gets it: the import works out and records a subsidy on each.
        rating_services.subsidy_add(
            name="Benchmark subsidy", percent="25", source=provider, effective_from="2025-01"
        )

    server_before = _server_cpu_seconds(connection)
    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    outcome = services.import_file(path=file, source=provider, period="2025-01", actor_name="benchmark")
    seconds = time.perf_counter() - started
    cpu_seconds = _cpu_seconds() - cpu_before
    server_cpu = _server_cpu_seconds(connection)

    assert outcome.import_id is not None
    record = Import.objects.get(pk=outcome.import_id)
    tagged = Charge.objects.filter(attribution_source="tags")
    by_pi_billed = dict(tagged.values_list("pi_email").annotate(total=Sum("billed_cost")).order_by())
    # With a subsidy, what it paid goes back on: billed + subsidies is the file's billed cost.
    paid = ChargeSubsidy.objects.filter(charge__attribution_source="tags")
    by_pi_paid = dict(paid.values_list("charge__pi_email").annotate(total=Sum("amount")).order_by())
    paid_total = paid.aggregate(s=Sum("amount"))["s"] or 0
    by_pi = {email: str(total + by_pi_paid.get(email, 0)) for email, total in by_pi_billed.items()}
    result = {
        "vendor": connection.vendor,
        "rows": outcome.rows,
        "charges": Charge.objects.count(),
        "flagged": outcome.flagged,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "server_cpu_seconds": (
            server_cpu - server_before if server_cpu is not None and server_before is not None else None
        ),
        "run_seconds": outcome.seconds,
        "timings": outcome.timings,
        "migrate_seconds": migrate_seconds,
        "billed_all": str(Charge.objects.aggregate(s=Sum("billed_cost"))["s"]),
        "billed_tagged": str(tagged.aggregate(s=Sum("billed_cost"))["s"] + paid_total),
        "subsidised": str(paid_total) if subsidised else None,
        "subsidies": ChargeSubsidy.objects.count(),
        "import_billed": str(record.billed_total),
        "by_pi": by_pi,
        # Linux reports kilobytes.
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(RESULT_MARK + json.dumps(result), flush=True)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _server_cpu_seconds(connection) -> float | None:
    """User+system CPU seconds of this connection's PostgreSQL backend process, when the server
    runs on this machine (its /proc is readable); None on SQLite or otherwise. Parallel workers
    of the server (an index build's) are other processes, not counted."""
    if connection.vendor != "postgresql":
        return None
    connection.ensure_connection()
    try:
        fields = (
            Path(f"/proc/{connection.connection.info.backend_pid}/stat").read_text().rsplit(")", 1)[1].split()
        )
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


# --- the floor: the same file read bare and inserted bare -------------------------------------------


def _bare_batches(file: Path):
    """The file's rows as pyarrow reads them with no work at all: every column as text."""
    import csv

    import pyarrow as pa
    import pyarrow.csv as pacsv

    with open(file, newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    reader = pacsv.open_csv(
        file,
        read_options=pacsv.ReadOptions(block_size=1 << 20),
        convert_options=pacsv.ConvertOptions(column_types={name: pa.string() for name in header}),
    )
    return header, reader


def floor_child(file: Path) -> None:
    """Runs in a fresh process like `child`: times pyarrow's bare read of the file, then the bare
    read again with every row inserted into an unindexed table of text columns in one transaction
    (executemany of tuples on SQLite, COPY of pyarrow's CSV on PostgreSQL)."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chargeback.settings")
    import django

    django.setup()
    import io

    import pyarrow.csv as pacsv
    from django.db import connection

    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    rows = 0
    _header, reader = _bare_batches(file)
    for batch in reader:
        rows += batch.num_rows
    read_seconds = time.perf_counter() - started
    read_cpu = _cpu_seconds() - cpu_before

    connection.ensure_connection()
    raw = connection.connection  # the driver's own connection: no Django wrapper in the way
    header, reader = _bare_batches(file)
    columns = ", ".join(f"c{i} text" for i in range(len(header)))
    server_before = _server_cpu_seconds(connection)
    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    if connection.vendor == "sqlite":
        raw.execute(f"CREATE TABLE floor_rows ({columns})")
        sql = f"INSERT INTO floor_rows VALUES ({', '.join(['?'] * len(header))})"
        raw.execute("BEGIN")
        for batch in reader:
            raw.executemany(sql, zip(*(column.to_pylist() for column in batch.columns), strict=True))
        raw.commit()
    else:
        with raw.cursor() as cursor:
            cursor.execute(f"CREATE TABLE floor_rows ({columns})")
            with cursor.copy("COPY floor_rows FROM STDIN (FORMAT csv)") as copy:
                for batch in reader:
                    buffer = io.BytesIO()
                    pacsv.write_csv(batch, buffer, pacsv.WriteOptions(include_header=False))
                    copy.write(buffer.getbuffer())
        raw.commit()
    floor_seconds = time.perf_counter() - started
    floor_cpu = _cpu_seconds() - cpu_before
    server_cpu = _server_cpu_seconds(connection)
    result = {
        "vendor": connection.vendor,
        "rows": rows,
        "read_seconds": read_seconds,
        "floor_seconds": floor_seconds,
        "read_cpu_seconds": read_cpu,
        "floor_cpu_seconds": floor_cpu,
        "floor_server_cpu_seconds": (
            server_cpu - server_before if server_cpu is not None and server_before is not None else None
        ),
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(RESULT_MARK + json.dumps(result), flush=True)


# --- the parent -------------------------------------------------------------------------------------


def run_child(
    label: str, file: Path, provider: str, database_url: str, data_dir: Path, *, floor: bool = False
) -> dict | None:
    env = dict(os.environ)
    env.pop("OPENCHARGEBACK_CONFIG", None)
    env.update(
        DATABASE_URL=database_url,
        OPENCHARGEBACK_DATA_DIR=str(data_dir),
        MEDIA_ROOT=str(data_dir / "media"),
        DJANGO_SETTINGS_MODULE="chargeback.settings",
    )
    what = "floor (bare read + bare insert)" if floor else "importing"
    print(f"\n[{label}] {what} {file.name} ...", flush=True)
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--floor-child" if floor else "--child",
            str(file),
            "--provider",
            provider,
        ],
        env=env,
        cwd=data_dir,  # no stray ./.env is read
        capture_output=True,
        text=True,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not lines:
        print(f"[{label}] FAILED (exit {proc.returncode})\n{proc.stdout}{proc.stderr}", flush=True)
        return None
    return json.loads(lines[-1][len(RESULT_MARK) :])


def report(label: str, result: dict, manifest: dict, floor: dict | None) -> None:
    from decimal import Decimal

    rows, seconds = result["rows"], result["seconds"]
    tagged_ok = Decimal(result["billed_tagged"]) == Decimal(manifest["billed_total"])
    pis_ok = {k: Decimal(v) for k, v in result["by_pi"].items()} == {
        k: Decimal(v) for k, v in manifest["billed_by_pi"].items()
    }
    import_ok = Decimal(result["billed_all"]) == Decimal(result["import_billed"])
    timings = ", ".join(f"{name} {value:.2f} s" for name, value in result["timings"].items())
    store = seconds - result["run_seconds"]
    load = os.getloadavg()[0]
    print(f"[{label}] rows            {rows:,}")
    print(f"[{label}] charges         {result['charges']:,} ({result['flagged']:,} flagged)")
    print(f"[{label}] seconds         {seconds:.2f} (store+hash {store:.2f} s; {timings})")
    print(
        f"[{label}] CPU seconds     {result['cpu_seconds']:.2f} (user+system of the child; load 1 min {load:.2f})"
    )
    print(f"[{label}] rows/s          {rows / seconds:,.0f}")
    print(f"[{label}] peak MB         {result['peak_mb']:,.0f} (target ≤ {TARGET_MB:,.0f})")
    if floor:
        ratio = seconds / floor["floor_seconds"]
        target = TARGET_RATIO[result["vendor"]]
        insert = "COPY" if result["vendor"] == "postgresql" else "executemany"
        print(
            f"[{label}] floor           {floor['floor_seconds']:.2f} s (bare read alone {floor['read_seconds']:.2f} s; "
            f"read + {insert} of {floor['rows']:,} rows)"
        )
        print(
            f"[{label}] vs floor        {ratio:.2f}× (target ≤ {target}×: {'met' if ratio <= target else 'NOT met'})"
        )
        # CPU time is steadier than wall time on a shared machine. The server's own CPU on
        # PostgreSQL is in neither figure: the line after adds its backend's, when readable.
        print(
            f"[{label}] CPU vs floor    import {result['cpu_seconds']:.2f} s, floor {floor['floor_cpu_seconds']:.2f} s "
            f"(read alone {floor['read_cpu_seconds']:.2f} s): {result['cpu_seconds'] / floor['floor_cpu_seconds']:.2f}×"
        )
        if result.get("server_cpu_seconds") is not None and floor.get("floor_server_cpu_seconds") is not None:
            import_total = result["cpu_seconds"] + result["server_cpu_seconds"]
            floor_total = floor["floor_cpu_seconds"] + floor["floor_server_cpu_seconds"]
            print(
                f"[{label}] with server CPU import {import_total:.2f} s (backend {result['server_cpu_seconds']:.2f} s), "
                f"floor {floor_total:.2f} s (backend {floor['floor_server_cpu_seconds']:.2f} s): "
                f"{import_total / floor_total:.2f}×"
            )
    if result.get("subsidised"):
        print(
            f"[{label}] subsidies       {result['subsidised']} paid on {result['subsidies']:,} charges "
            "(added back to the tagged Σ below)"
        )
    print(f"[{label}] Σ billed        all charges {result['billed_all']}, tagged {result['billed_tagged']}")
    print(
        f"[{label}] vs manifest     tagged Σ {'EQUAL' if tagged_ok else 'DIFFERENT'} "
        f"({manifest['billed_total']}); per PI {'EQUAL' if pis_ok else 'DIFFERENT'}; "
        f"charges = Import.billed_total {'yes' if import_ok else 'NO'}"
    )


def report_growth(label: str, small: dict, large: dict) -> None:
    growth = large["peak_mb"] / small["peak_mb"]
    print(
        f"[{label}] peak at {small['rows']:,} rows {small['peak_mb']:,.0f} MB, at {large['rows']:,} rows "
        f"{large['peak_mb']:,.0f} MB: {growth:.2f}× (target ≤ {TARGET_PEAK_GROWTH}× and ≤ {TARGET_MB:,.0f} MB: "
        f"{'met' if growth <= TARGET_PEAK_GROWTH and large['peak_mb'] <= TARGET_MB else 'NOT met'})"
    )


def postgres_reachable() -> bool:
    import psycopg

    try:
        with psycopg.connect(f"{POSTGRES_SERVER}/postgres", connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def run_database(
    label: str, file: Path, provider: str, *, floor: bool, sqlite: bool
) -> tuple[dict | None, dict | None]:
    """(import result, floor result) of one file, each child on a fresh database."""
    results = []
    for is_floor in (True, False) if floor else (False,):
        if sqlite:
            with tempfile.TemporaryDirectory(prefix="ocb-bench-sqlite-") as tmp:
                url = f"sqlite:///{tmp}/bench.sqlite3"
                results.append(run_child(label, file, provider, url, Path(tmp), floor=is_floor))
            continue
        import psycopg

        name = f"ocb_bench_{os.getpid()}"
        with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        try:
            with tempfile.TemporaryDirectory(prefix="ocb-bench-pg-") as tmp:
                url = f"{POSTGRES_SERVER}/{name}"
                results.append(run_child(label, file, provider, url, Path(tmp), floor=is_floor))
        finally:
            with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return results[-1], (results[0] if floor else None)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--provider", default="aws", choices=["aws", "azure", "gcp", "hpc"])
    parser.add_argument("--grain", default="daily", choices=["hourly", "daily", "monthly"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--skip-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument("--no-floor", action="store_true", help="import only, without measuring the floor")
    parser.add_argument(
        "--baseline-rows",
        type=int,
        default=0,
        help="also import a file of this many rows (same grain) and compare peak memory, e.g. 1000000 with --rows 5000000",
    )
    parser.add_argument(
        "--subsidy",
        action="store_true",
        help="with a 25 %% subsidy on the source: every attributed charge is subsidised (memory of that path)",
    )
    parser.add_argument("--child", metavar="FILE", help=argparse.SUPPRESS)
    parser.add_argument("--floor-child", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subsidy:
        os.environ[SUBSIDY_ENV] = "1"  # the children inherit it

    if args.child:
        child(Path(args.child), args.provider)
        return
    if args.floor_child:
        floor_child(Path(args.floor_child))
        return

    file, manifest = synthetic_file(args.rows, args.provider, args.grain, args.seed)
    baseline = (
        synthetic_file(args.baseline_rows, args.provider, args.grain, args.seed)[0]
        if args.baseline_rows
        else None
    )
    size_mb = file.stat().st_size / 1024**2
    print(
        f"file: {file.name}, {size_mb:,.0f} MB, {manifest['rows']:,} rows, manifest Σ billed (tagged) "
        f"{manifest['billed_total']}, {manifest['untagged_rows']:,} untagged rows; load {os.getloadavg()}"
    )
    databases = []
    if not args.skip_sqlite:
        databases.append(("sqlite", True))
    if not args.skip_postgres:
        if postgres_reachable():
            databases.append(("postgres", False))
        else:
            print(f"\n[postgres] skipped: {POSTGRES_SERVER} is not reachable")
    for label, sqlite in databases:
        result, floor = run_database(label, file, args.provider, floor=not args.no_floor, sqlite=sqlite)
        if result:
            report(label, result, manifest, floor)
        if result and baseline is not None:
            small, _ = run_database(label, baseline, args.provider, floor=False, sqlite=sqlite)
            if small:
                report_growth(label, small, result)


if __name__ == "__main__":
    main()
