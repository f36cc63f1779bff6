"""Bad-input benchmark: peak memory and time of refusing a gzip full of malformed rows.

    .venv/bin/python benchmarks/bad_input.py [--rows 2000000] [--kind short|long|number|all]

Each file is a FOCUS header followed by ROWS malformed rows (each a little different, so the
gzip is about a megabyte or two), refused by `openchargeback ingest` in a fresh child process
with its own SQLite database; the peak memory reported is that child's ru_maxrss. The import must
end with exit code 1 and "file abandoned after N malformed rows" without reading the rest of the
file. Target: at most 200 MB at 2M rows. Asserts nothing; compare figures on one machine only.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULT_MARK = "BENCHMARK-RESULT "
TARGET_MB = 200.0
HEADER = (
    "BillingPeriodStart,BillingPeriodEnd,ChargePeriodStart,ListCost,BilledCost,ResourceId,ServiceName,Tags\n"
)
KINDS = {
    # Too few fields: the CSV reader's invalid-row handler sees every one.
    "short": lambda n: f"2025-01-01,{n}\n",
    # Too many fields.
    "long": lambda n: f"2025-01-01,2025-02-01,2025-01-01,1,2,r-{n},EC2,{{}},extra,{n}\n",
    # The right shape, but the amount is not a number.
    "number": lambda n: f"2025-01-01,2025-02-01,2025-01-01,1,x{n},r-{n},EC2,{{}}\n",
}


def bad_file(directory: Path, kind: str, rows: int) -> Path:
    path = directory / f"aws_2025-01_{kind}_{rows}.csv.gz"
    line = KINDS[kind]
    with gzip.open(path, "wb", compresslevel=6) as out:
        text = io.TextIOWrapper(out, encoding="utf-8", newline="")
        text.write(HEADER)
        for n in range(rows):
            text.write(line(n))
        text.flush()
        text.detach()
    return path


def child(file: Path) -> None:
    """Runs in a fresh process with OPENCHARGEBACK_DATA_DIR and DATABASE_URL set by the parent."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chargeback.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from billing import services

    call_command("migrate", verbosity=0)
    services.source_create(slug="aws")
    baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    code = 0
    try:
        call_command("ingest", str(file), "-s", "aws", stdout=out, stderr=err)
    except SystemExit as exc:  # pragma: no cover - call_command does not exit
        code = int(exc.code or 0)
    except Exception as exc:
        code = getattr(exc, "returncode", 99)
    seconds = time.perf_counter() - started
    result = {
        "exit": code,
        "seconds": seconds,
        "message": (err.getvalue().strip().splitlines() or [""])[0],
        "baseline_mb": baseline_mb,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(RESULT_MARK + json.dumps(result), flush=True)


def run_child(file: Path) -> dict | None:
    with tempfile.TemporaryDirectory(prefix="ocb-bench-bad-") as tmp:
        env = dict(os.environ)
        env.pop("OPENCHARGEBACK_CONFIG", None)
        env.update(
            DATABASE_URL=f"sqlite:///{tmp}/bench.sqlite3",
            OPENCHARGEBACK_DATA_DIR=tmp,
            MEDIA_ROOT=str(Path(tmp) / "media"),
            DJANGO_SETTINGS_MODULE="chargeback.settings",
        )
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(file)],
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
        )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if not lines:
        print(f"  FAILED (exit {proc.returncode})\n{proc.stdout}{proc.stderr[-3000:]}", flush=True)
        return None
    return json.loads(lines[-1][len(RESULT_MARK) :])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--kind", default="all", choices=[*KINDS, "all"])
    parser.add_argument("--child", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child))
        return
    kinds = list(KINDS) if args.kind == "all" else [args.kind]
    with tempfile.TemporaryDirectory(prefix="ocb-bad-files-") as tmp:
        for kind in kinds:
            file = bad_file(Path(tmp), kind, args.rows)
            print(
                f"\n[{kind}] {file.name}: {args.rows:,} malformed rows, gzip {file.stat().st_size / 1024**2:.1f} MB"
            )
            result = run_child(file)
            if result is None:
                continue
            within = result["peak_mb"] <= TARGET_MB
            print(f"[{kind}] exit            {result['exit']}")
            print(f"[{kind}] message         {result['message'][:160]}")
            print(f"[{kind}] seconds         {result['seconds']:.2f}")
            print(
                f"[{kind}] peak MB         {result['peak_mb']:,.0f} (before the import: {result['baseline_mb']:,.0f}); "
                f"target ≤ {TARGET_MB:.0f} MB: {'met' if within else 'NOT met'}"
            )


if __name__ == "__main__":
    main()
