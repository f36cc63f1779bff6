"""Statements benchmark: 10,000 statements (5,000 PIs × 2 projects) rendered by a Celery worker
of 2 processes, with PDFs/s and the peak memory of every process.

    .venv/bin/python benchmarks/statements.py [--pis 5000] [--resources 8] [--redis redis://127.0.0.1:6379/14]
                                             [--database-url postgres://...] [--eager]

Builds a closed period in a fresh SQLite file (or the given database) under a temporary directory:
each PI has 2 projects, each project `--resources` charges over 3 sources and several services
(with a credit now and then). Then it times `generate` (statements issued) and rendering every
PDF with a Celery worker of 2 processes on Redis (`--redis`, default redis://127.0.0.1:6379/14;
the database is flushed afterwards). Without Redis that figure comes from a pool of 2 plain
processes instead, and says so. `--eager` also renders every PDF in this process first (one
process, for comparison). The figure of issue 16 is the default: 5,000 PIs, 10,000 statements.

Targets (issue 16): ≥ 100 PDFs/s with 2 processes, ≤ 600 MB peak RSS per process — each worker
process (the Celery parent and its 2 children, read from /proc as VmHWM) and this command.
The machine may be shared: the worker's CPU time gives the rate on 2 dedicated cores too.
Prints figures beside their targets; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_PDFS_PER_SECOND = 100.0
TARGET_PEAK_MB = 600.0


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--pis", type=int, default=5000, help="PIs, 2 projects and 2 statements each (default 5000)"
    )
    ap.add_argument("--resources", type=int, default=8, help="charges per project (default 8)")
    ap.add_argument(
        "--redis", default="redis://127.0.0.1:6379/14", help="broker for the worker run ('' to skip)"
    )
    ap.add_argument("--database-url", default="", help="default: a SQLite file in the temporary directory")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--eager", action="store_true", help="also render every PDF in this process first")
    return ap.parse_args()


def configure(tmp: Path, args: argparse.Namespace) -> dict[str, str]:
    env = {
        "DJANGO_SETTINGS_MODULE": "chargeback.settings",
        "DATABASE_URL": args.database_url or f"sqlite:///{tmp / 'bench.sqlite3'}",
        "OPENCHARGEBACK_DATA_DIR": str(tmp / "data"),
        "MEDIA_ROOT": str(tmp / "media"),
        "CELERY_BROKER_URL": "",
        "LOG_LEVEL": "ERROR",
        "PYTHONPATH": str(ROOT),
    }
    os.environ.pop("OPENCHARGEBACK_CONFIG", None)
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    os.chdir(tmp)  # no ./.env from the repository
    return env


def build_data(pis: int, resources: int) -> int:
    from billing.models import PI, BillingPeriod, Charge, Import, Project, Source

    rng = random.Random(7)
    period = BillingPeriod.objects.create(period="2025-01", status=BillingPeriod.Status.CLOSED)
    sources = [
        Source.objects.create(slug=slug, display_name=name, filename_pattern=f"{slug}_*")
        for slug, name in (
            ("aws", "Amazon Web Services"),
            ("hpc", "HPC cluster"),
            ("storage", "Research storage"),
        )
    ]
    services = {
        "aws": ["Amazon EC2", "Amazon S3", "Amazon RDS", "Amazon SageMaker"],
        "hpc": ["HPC Cluster", "HPC GPU Cluster"],
        "storage": ["Research Storage - Project", "Research Storage - Archive"],
    }
    imports = {
        s.slug: Import.objects.create(
            source=s, period=period, original_name=f"{s.slug}.csv", sha256=s.slug * 8, status="completed"
        )
        for s in sources
    }
    pi_rows = PI.objects.bulk_create(
        [
            PI(
                email=f"pi{i:05d}@university.example",
                name=f"Principal Investigator {i:05d}",
                department="Science",
            )
            for i in range(pis)
        ]
    )
    projects = Project.objects.bulk_create(
        [
            Project(
                project_id=f"project-{i:05d}-{j}",
                pi=pi,
                fund_org=f"NSF-2025-{i:05d}{j}",
                reference_1=f"GRANT-{i}-{j}",
            )
            for i, pi in enumerate(pi_rows)
            for j in range(2)
        ]
    )
    charges: list = []
    written = 0
    for project in projects:
        for k in range(resources):
            source = sources[k % len(sources)]
            service = rng.choice(services[source.slug])
            list_cost = Decimal(rng.randint(100, 500_000)) / Decimal(100)
            billed = (list_cost * Decimal(rng.choice(["1", "0.85", "0.5", "0"]))).quantize(
                Decimal("0.0000000001")
            )
            category = "Credit" if rng.random() < 0.02 else "Usage"
            if category == "Credit":
                list_cost = billed = -Decimal(rng.randint(100, 5000)) / Decimal(100)
            charges.append(
                Charge(
                    period=period,
                    source=source,
                    import_run=imports[source.slug],
                    pi=project.pi,
                    project=project,
                    pi_email=project.pi.email,
                    project_code=project.project_id,
                    fund_org=project.fund_org,
                    reference_1=project.reference_1,
                    resource_id=f"{source.slug}-{project.project_id}-r{k:03d}",
                    resource_name=f"{project.project_id}-{service.split()[-1].lower()}-{k}",
                    service_name=service,
                    charge_category=category,
                    quantity=Decimal(rng.randint(1, 744)),
                    unit="Hours",
                    list_cost=list_cost,
                    contracted_cost=billed,
                    billed_cost=billed,
                    effective_cost=billed,
                )
            )
        if len(charges) >= 5000:  # in slices, so the command's peak memory is not the build's
            Charge.objects.bulk_create(charges)
            written += len(charges)
            charges = []
    Charge.objects.bulk_create(charges)
    return written + len(charges)


def reset_pdfs() -> None:
    from django.conf import settings

    from statements.models import Statement

    Statement.objects.update(pdf="", pdf_sha256="", pdf_bytes=0, rendered_at=None, render_error="")
    shutil.rmtree(Path(settings.MEDIA_ROOT) / "statements", ignore_errors=True)


def wait_rendered(ids: list[int], timeout: float = 3600, every_second=None) -> None:
    from statements.selectors import dispatch_progress

    deadline = time.monotonic() + timeout
    ticked = 0.0
    while time.monotonic() < deadline:
        progress = dispatch_progress(ids, [])
        if progress.done:
            return
        if every_second and time.monotonic() - ticked >= 1.0:
            every_second()
            ticked = time.monotonic()
        time.sleep(0.1)
    raise SystemExit("timed out waiting for the worker")


def group_peak_rss_mb(pgid: int, peaks: dict[int, float]) -> None:
    """Record into `peaks` the RSS high-water mark (VmHWM, MB) of each live process of a process
    group (Linux /proc): read now and then, so a process that ends early is counted too."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            status = (stat.parent / "status").read_text()
        except (OSError, IndexError, ValueError):
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                pid = int(stat.parent.name)
                peaks[pid] = max(peaks.get(pid, 0.0), int(line.split()[1]) / 1024)


def own_peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # kB on Linux


def _pool_init() -> None:
    import django
    from django.db import connections

    django.setup()
    connections.close_all()


def _pool_render(statement_id: int) -> None:
    from statements.services import statement_render_pdf

    statement_render_pdf(statement_id=statement_id)


def render_with_pool(ids: list[int]) -> float:
    from django.db import connections

    connections.close_all()
    ctx = multiprocessing.get_context("fork")
    started = time.perf_counter()
    with ctx.Pool(2, initializer=_pool_init) as pool:
        pool.map(_pool_render, ids, chunksize=8)
    return time.perf_counter() - started


def redis_ok(url: str) -> bool:
    if not url:
        return False
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        return True
    except Exception:
        return False


def group_cpu_seconds(pgid: int) -> float:
    """CPU time (user + system) used so far by the live processes of a process group (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the command: state, ppid, pgrp, ...
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def render_with_worker(
    ids: list[int], env: dict[str, str], redis_url: str, tmp: Path, peaks: dict[int, float]
) -> tuple[float, float]:
    """Seconds and worker CPU-seconds to render `ids`; `peaks` gets each worker process's peak RSS."""
    from django.conf import settings

    from chargeback.celery import app
    from statements import tasks

    queue = f"ocb-bench-{os.getpid()}"
    worker_env = {
        **os.environ,
        **env,
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "CELERY_TASK_DEFAULT_QUEUE": queue,
    }
    log = (tmp / "worker.log").open("w")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "chargeback",
            "worker",
            "--pool=prefork",
            f"--concurrency={os.environ.get('BENCH_CONCURRENCY', '2')}",
            f"--queues={queue}",
            "--without-gossip",
            "--without-mingle",
            "--loglevel=WARNING",
        ],
        env=worker_env,
        cwd=tmp,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        settings.CELERY_TASK_ALWAYS_EAGER = False
        app.conf.update(
            broker_url=redis_url, result_backend=redis_url, task_always_eager=False, task_default_queue=queue
        )
        # Warm up: wait until the worker answers, so start-up is not timed.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            replies = app.control.ping(timeout=0.5)
            if replies:
                break
        else:
            raise SystemExit(f"the worker did not start; see {tmp / 'worker.log'}")
        cpu_before = group_cpu_seconds(worker.pid)
        started = time.perf_counter()
        tasks.dispatch(ids, [])
        wait_rendered(ids, every_second=lambda: group_peak_rss_mb(worker.pid, peaks))
        elapsed = time.perf_counter() - started
        group_peak_rss_mb(worker.pid, peaks)
        return elapsed, group_cpu_seconds(worker.pid) - cpu_before
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
        import redis

        redis.Redis.from_url(redis_url).flushdb()


def main() -> None:
    args = parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ocb-bench-statements-"))
    env = configure(tmp, args)
    import django

    django.setup()
    from django.core.management import call_command

    from statements import services, tasks
    from statements.models import Statement

    call_command("migrate", verbosity=0)
    print(f"building {args.pis:,} PIs × 2 projects × {args.resources} charges ...", flush=True)
    started = time.perf_counter()
    charges = build_data(args.pis, args.resources)
    print(f"  {charges:,} charges in {time.perf_counter() - started:.1f} s", flush=True)
    peak_after_build = own_peak_rss_mb()

    started = time.perf_counter()
    outcome = services.statements_generate(period="2025-01", actor_name="benchmark")
    generate_s = time.perf_counter() - started
    ids = outcome.to_render
    print(
        f"generate: {len(ids):,} statements in {generate_s:.2f} s ({len(ids) / generate_s:,.0f} statements/s), "
        f"total due {outcome.billed_total:,.2f}",
        flush=True,
    )

    load = os.getloadavg()[0]
    eager_rate = None
    if args.eager:
        started, cpu = time.perf_counter(), time.process_time()
        tasks.dispatch(ids, [])
        eager_s, eager_cpu = time.perf_counter() - started, time.process_time() - cpu
        sizes = list(Statement.objects.values_list("pdf_bytes", flat=True))
        eager_rate = len(ids) / eager_s
        print(
            f"eager (1 process): {len(ids):,} PDFs in {eager_s:.2f} s = {eager_rate:,.1f} PDFs/s; "
            f"{eager_cpu / len(ids) * 1000:.1f} ms CPU per PDF; {sum(sizes) / len(sizes) / 1024:.1f} KB per PDF",
            flush=True,
        )
        reset_pdfs()
    command_before_render = own_peak_rss_mb()

    worker_cpu = None
    peaks: dict[int, float] = {}
    worker_pid = None
    if redis_ok(args.redis):
        mode = f"Celery worker, 2 processes, Redis {args.redis}"
        parallel_s, worker_cpu = render_with_worker(ids, env, args.redis, tmp, peaks)
        worker_pid = min(peaks) if peaks else None
    else:
        mode = "pool of 2 processes (no Redis reachable: not a Celery worker)"
        parallel_s = render_with_pool(ids)
    rendered = Statement.objects.exclude(pdf="").count()
    parallel_rate = rendered / parallel_s

    def meets(value: float) -> str:
        return "ok" if value >= TARGET_PDFS_PER_SECOND else "BELOW"

    print(
        f"{mode}: {rendered:,} PDFs in {parallel_s:.2f} s = {parallel_rate:,.1f} PDFs/s "
        f"(target ≥ {TARGET_PDFS_PER_SECOND:.0f}: {meets(parallel_rate)})",
        flush=True,
    )
    dedicated = None
    if worker_cpu:
        dedicated = rendered / (worker_cpu / 2)
        print(
            f"  the worker used {worker_cpu:.1f} CPU-s ({worker_cpu / rendered * 1000:.1f} ms per PDF, Celery included): "
            f"{dedicated:,.0f} PDFs/s on 2 dedicated cores (target ≥ {TARGET_PDFS_PER_SECOND:.0f}: {meets(dedicated)})",
            flush=True,
        )
    memory = [
        (f"worker {'parent' if pid == worker_pid else 'child'} (pid {pid})", mb)
        for pid, mb in sorted(peaks.items())
    ]
    if not peaks:
        memory.append(("pool processes (largest)", own_peak_rss_mb(resource.RUSAGE_CHILDREN)))
    memory.append(("this command (build, generate, dispatch)", own_peak_rss_mb()))
    print(f"peak memory (RSS high-water mark), target ≤ {TARGET_PEAK_MB:.0f} MB per process:")
    for label, mb in memory:
        print(f"  {label:<44} {mb:7.1f} MB  {'ok' if mb <= TARGET_PEAK_MB else 'ABOVE'}")
    print(
        f"  (this command's peak after building the data: {peak_after_build:.1f} MB; "
        f"after generate: {command_before_render:.1f} MB)"
    )
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load:.2f} before the runs, {os.getloadavg()[0]:.2f} after "
        "(other work on the machine slows the wall-clock figures)",
        flush=True,
    )
    result = {
        "statements": len(ids),
        "charges": charges,
        "generate_s": round(generate_s, 3),
        "eager_pdfs_per_s": round(eager_rate, 1) if eager_rate else None,
        "parallel_pdfs_per_s": round(parallel_rate, 1),
        "parallel_mode": mode,
        "worker_cpu_ms_per_pdf": round(worker_cpu / rendered * 1000, 2) if worker_cpu else None,
        "dedicated_2_core_pdfs_per_s": round(dedicated, 1) if dedicated else None,
        "load_average": round(load, 2),
        "peak_rss_mb": {label: round(mb, 1) for label, mb in memory},
    }
    print("BENCHMARK-RESULT " + json.dumps(result))
    if args.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
