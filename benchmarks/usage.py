"""Usage rating benchmark: a generated 1,000,000-line sacct file rated into charges.

    .venv/bin/python benchmarks/usage.py [--lines 1000000] [--seed 1] [--postgres]

The file (cached under benchmarks/out/) mixes 2,000 Slurm accounts on four partitions, CPU and GPU
jobs (typed and untyped gres), completed, failed, cancelled, node-failed, running and zero-length
jobs, and about 6 % that cross a month boundary. Each measurement runs in a fresh child process,
so the peak memory (ru_maxrss) is that run's alone:

- bare read: pyarrow.csv.read_csv of the file, nothing else (its peak memory in a child of its own);
- rating: reading the sacct file, working out every job's seconds in the period and pricing the
  sums with rates, free allowances and subsidies, in a fresh SQLite database with 1,600 of the
  accounts mapped to projects; timed five times in turns with the bare read (best of each), so that
  both see the same load on a shared machine;
- usage slurm: the whole command's service (rating, FOCUS file, import through the ingest, the
  stored usage file) once.

Prints jobs/s, seconds, peak MB and the ratio to the bare read, against the targets (≥ 250,000
jobs/s, ≤ 3× the bare read, ≤ 500 MB). Asserts nothing; compare figures on one machine only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "out"
RESULT_MARK = "BENCHMARK-RESULT "
PERIOD = "2025-03"
POSTGRES_SERVER = "postgres://postgres@127.0.0.1:5432"
TARGET_JOBS_PER_SECOND = 250_000
TARGET_RATIO = 3.0
TARGET_MB = 500.0


def sacct_file(lines: int, seed: int) -> Path:
    """The cached generated file (about 130 bytes a line)."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"sacct_{PERIOD}_{lines}_seed{seed}.txt"
    if path.is_file():
        print(f"using cached {path.relative_to(ROOT)}", flush=True)
        return path
    import numpy as np

    print(f"generating {path.name} ({lines:,} lines) ...", flush=True)
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    accounts = np.array([f"lab{i:04d}" for i in range(2000)])[rng.integers(0, 2000, lines)]
    partitions = np.array(["cpu", "gpu", "bigmem", "debug"])[rng.choice(4, lines, p=[0.7, 0.15, 0.1, 0.05])]
    cpus = rng.integers(1, 129, lines)
    elapsed = rng.integers(0, 2 * 86400, lines)
    first = int(dt.datetime(2025, 3, 1, tzinfo=dt.UTC).timestamp())
    start = first - 2 * 86400 + rng.integers(0, 33 * 86400, lines)
    end = start + elapsed
    gpus = np.where(partitions == "gpu", rng.integers(1, 5, lines), 0)
    typed = rng.random(lines) < 0.5
    states = np.array(
        ["COMPLETED", "FAILED", "CANCELLED by 1001", "TIMEOUT", "NODE_FAIL", "RUNNING", "OUT_OF_MEMORY"]
    )[rng.choice(7, lines, p=[0.7, 0.1, 0.08, 0.05, 0.01, 0.03, 0.03])]
    starts = np.datetime_as_string(start.astype("datetime64[s]"), unit="s")
    ends = np.where(
        states == "RUNNING", "Unknown", np.datetime_as_string(end.astype("datetime64[s]"), unit="s")
    )
    partial = path.with_name(f"partial-{os.getpid()}-{path.name}")
    with open(partial, "w", encoding="utf-8") as fh:
        for i in range(lines):
            c, g = cpus[i], gpus[i]
            tres = f"billing={c},cpu={c},mem={c * 4}G,node=1"
            if g:
                gres = f"gres/gpu={g},gres/gpu:a100={g}" if typed[i] else f"gres/gpu:a100={g}"
                tres = f"billing={c},cpu={c},{gres},mem={c * 4}G,node=1"
            fh.write(
                f"{1_000_000 + i}|u{i % 5000}|{accounts[i]}|{partitions[i]}|normal|{c}|{tres}|{elapsed[i]}|"
                f"{starts[i]}|{ends[i]}|{states[i]}\n"
            )
    partial.replace(path)
    print(f"  generated in {time.perf_counter() - started:.1f} s", flush=True)
    return path


def _peak_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss over an
    exec, so a child would report the parent's peak (the generator's) when that was higher."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- children -------------------------------------------------------------------------------------


def _bare_read(file: Path) -> int:
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(
        file,
        # Named f0, f1, ... (billing.rating.slurm is not imported: this child loads pyarrow only).
        read_options=pacsv.ReadOptions(autogenerate_column_names=True),
        parse_options=pacsv.ParseOptions(delimiter="|"),
    )
    return table.num_rows


def child_bare(file: Path) -> None:
    """The bare read alone, for its peak memory."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        rows = _bare_read(file)
        times.append(time.perf_counter() - started)
    print(RESULT_MARK + json.dumps({"seconds": min(times), "rows": rows, "peak_mb": _peak_mb()}), flush=True)


def _setup_database() -> None:
    from django.core.management import call_command

    from billing.rating import services as rating
    from billing.services import account_mapping_set, source_create

    call_command("migrate", verbosity=0)
    source_create(slug="hpc", display_name="HPC")
    rating.rate_add(
        source="hpc", unit="core-hour", price="0.0200", effective_from="2025-01", free_quantity="100"
    )
    rating.rate_add(source="hpc", unit="core-hour", price="0.0100", tier="gpu", effective_from="2025-01")
    rating.rate_add(source="hpc", unit="gpu-hour", price="1.5000", tier="gpu", effective_from="2025-01")
    for i in range(1600):
        account_mapping_set(
            sub_account_id=f"lab{i:04d}",
            project_id=f"project-{i // 4:03d}",
            pi_email=f"pi{i // 8:03d}@university.example",
            fund_org=f"F-{i // 4:03d}",
            source="hpc",
        )
    rating.subsidy_add(
        name="New Faculty Startup",
        percent="75",
        pis=[f"pi{i:03d}@university.example" for i in range(0, 200, 7)],
        cap="5000",
        effective_from="2025-01",
    )


def child_rating(file: Path) -> None:
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from billing.rating.pricing import price_usage
    from billing.rating.services import usage_rate
    from billing.rating.services.usage import read_usage
    from billing.selectors import source_get

    _setup_database()
    hpc = source_get("hpc")
    now = dt.datetime(2025, 4, 2, tzinfo=dt.UTC)

    def rate() -> tuple[list, dict, dict]:
        started = time.perf_counter()
        usage_rows, summary = read_usage("slurm", file, period=PERIOD, name=file.name, now=now)
        read_seconds = time.perf_counter() - started
        rows = price_usage(usage_rows, source=hpc, period=PERIOD)
        return rows, summary, {"read": read_seconds, "price": time.perf_counter() - started - read_seconds}

    rows, summary, _ = rate()
    rating_peak = _peak_mb()  # before any bare read in this process
    started = time.perf_counter()
    outcome = usage_rate(
        kind="slurm", path=file, period=PERIOD, source="hpc", now=now, actor_name="benchmark"
    )
    full_seconds = time.perf_counter() - started
    full_peak = _peak_mb()
    # Rating and the bare read taken in turns, so that both see the same load on a shared machine.
    rating_times, bare_times, timings = [], [], {}
    for _ in range(5):
        started = time.perf_counter()
        _bare_read(file)
        bare_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        rows, summary, split = rate()
        rating_times.append(time.perf_counter() - started)
        if rating_times[-1] == min(rating_times):
            timings = split
    imported = outcome.imported
    assert imported is not None
    result = {
        "seconds": min(rating_times),
        "median_seconds": sorted(rating_times)[len(rating_times) // 2],
        "bare_seconds": min(bare_times),
        "bare_median_seconds": sorted(bare_times)[len(bare_times) // 2],
        "timings": timings,
        "jobs": summary["jobs"],
        "lines": summary["lines"],
        "summary": summary,
        "charges": len(rows),
        "rating_peak_mb": rating_peak,
        "full_seconds": full_seconds,
        "full_charges": imported.charges,
        "full_flagged": imported.flagged,
        "list": str(outcome.list_total),
        "billed": str(outcome.billed_total),
        "import_billed": str(imported.billed_total),
        "peak_mb": full_peak,
    }
    print(RESULT_MARK + json.dumps(result), flush=True)


# --- the parent -------------------------------------------------------------------------------------


def run_child(kind: str, file: Path, database_url: str, data_dir: Path) -> dict | None:
    env = dict(os.environ)
    env.pop("OPENCHARGEBACK_CONFIG", None)
    env.update(
        DATABASE_URL=database_url,
        OPENCHARGEBACK_DATA_DIR=str(data_dir),
        DJANGO_SETTINGS_MODULE="chargeback.settings",
    )
    proc = subprocess.run(
        [sys.executable, __file__, f"--child-{kind}", str(file)],
        env=env,
        cwd=data_dir,
        capture_output=True,
        text=True,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not lines:
        print(f"[{kind}] FAILED (exit {proc.returncode})\n{proc.stdout}{proc.stderr}", flush=True)
        return None
    return json.loads(lines[-1][len(RESULT_MARK) :])


def report(label: str, bare: dict, rating: dict) -> None:
    jobs = rating["jobs"]
    ratio = rating["seconds"] / rating["bare_seconds"]
    per_second = jobs / rating["seconds"]
    timings = ", ".join(f"{k} {v:.2f} s" for k, v in rating["timings"].items())
    print(
        f"[{label}] bare pyarrow read   {rating['bare_seconds']:.2f} s (median {rating['bare_median_seconds']:.2f} s), "
        f"{bare['rows']:,} rows, peak {bare['peak_mb']:,.0f} MB on its own"
    )
    print(
        f"[{label}] rating              {rating['seconds']:.2f} s (median {rating['median_seconds']:.2f} s; {timings}), "
        f"{rating['lines']:,} lines"
    )
    print(f"[{label}] jobs/s              {per_second:,.0f}")
    print(f"[{label}] × bare read         {ratio:.2f} (best against best, taken in turns)")
    print(
        f"[{label}] peak MB (rating)    {rating['rating_peak_mb']:,.0f} (the whole process: Django, database, rating)"
    )
    print(f"[{label}] charges             {rating['charges']:,} (account × partition × unit)")
    print(f"[{label}] read                {json.dumps(rating['summary'])}")
    print(
        f"[{label}] usage slurm         {rating['full_seconds']:.2f} s with the import "
        f"({rating['full_charges']:,} charges, {rating['full_flagged']:,} flagged), peak {rating['peak_mb']:,.0f} MB"
    )
    print(
        f"[{label}] Σ                   list {rating['list']}, billed {rating['billed']}, "
        f"import billed {rating['import_billed']} ({'equal' if rating['billed'] == rating['import_billed'] else 'DIFFERENT'})"
    )
    met = (
        per_second >= TARGET_JOBS_PER_SECOND
        and ratio <= TARGET_RATIO
        and rating["rating_peak_mb"] <= TARGET_MB
    )
    print(
        f"[{label}] target              ≥ {TARGET_JOBS_PER_SECOND:,} jobs/s, ≤ {TARGET_RATIO:.0f}× the bare read, "
        f"≤ {TARGET_MB:.0f} MB: {'met' if met else 'NOT met'} (load 1 min {os.getloadavg()[0]:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--postgres", action="store_true", help="also run the rating child on PostgreSQL")
    parser.add_argument("--child-bare", metavar="FILE", help=argparse.SUPPRESS)
    parser.add_argument("--child-rating", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_bare:
        child_bare(Path(args.child_bare))
        return
    if args.child_rating:
        child_rating(Path(args.child_rating))
        return

    file = sacct_file(args.lines, args.seed)
    print(f"file: {file.name}, {file.stat().st_size / 1024**2:,.0f} MB")
    with tempfile.TemporaryDirectory(prefix="ocb-bench-usage-") as tmp:
        bare = run_child("bare", file, f"sqlite:///{tmp}/bench.sqlite3", Path(tmp))
    with tempfile.TemporaryDirectory(prefix="ocb-bench-usage-") as tmp:
        rating = run_child("rating", file, f"sqlite:///{tmp}/bench.sqlite3", Path(tmp))
    if bare and rating:
        report("sqlite", bare, rating)
    if args.postgres and bare:
        import psycopg

        name = f"ocb_bench_usage_{os.getpid()}"
        with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        try:
            with tempfile.TemporaryDirectory(prefix="ocb-bench-usage-pg-") as tmp:
                result = run_child("rating", file, f"{POSTGRES_SERVER}/{name}", Path(tmp))
            if result:
                report("postgres", bare, result)
        finally:
            with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
