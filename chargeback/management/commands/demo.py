"""openchargeback demo: migrate, then load the fictional month fixtures/demo/ (2026-10) end to end.

Idempotent: sources and the mapping that exist are kept, files imported before are skipped,
the admin user is created only once (its password is printed that one time).
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandParser

from billing import selectors, services
from billing.ingest import pipeline
from billing.management.commands._output import FileResult, file_result_json, file_result_text
from chargeback.commands import AlreadyReported, ReportingCommand
from chargeback.errors import Refused
from chargeback.secret_key import PUBLIC_KEYS, secret_key_file_ensure
from statements import selectors as statement_selectors
from statements.management.commands._period_output import period_summary_json, period_summary_text

DEMO_PERIOD = "2026-10"
DEMO_SOURCES = [
    ("aws", "Amazon Web Services"),
    ("azure", "Microsoft Azure"),
    ("gcp", "Google Cloud"),
    ("hpc", "HPC cluster"),
    ("storage", "Research storage"),
]
CREDIT_ACCOUNT = "4500"
DEMO_MAPPING = {
    "sub_account_id": "210987654321",
    "project_id": "astro-survey",
    "pi_email": "carmen.diaz@university.example",
    "fund_org": "NSF-2025-0931",
    "note": "demo: shared AWS networking account of the astro survey",
}
# Rated usage: the prices and subsidies the demo month's HPC and storage files were worked out with
# (the fiscal year starting July 2026), and the Slurm accounts of its labs; try them with the sample
# usage files in fixtures/demo/usage/ (README: "Rated usage").
DEMO_RATES_FROM = "2026-07"
DEMO_RATES = [
    # source, unit, price, tier
    ("hpc", "core-hour", "0.0250", ""),
    ("hpc", "core-hour", "0.0400", "highmem"),
    ("hpc", "core-hour", "0.0000", "gpu"),
    ("hpc", "gpu-hour", "1.1000", "gpu"),
    ("storage", "tb-month", "5.0000", "project"),
    ("storage", "tb-month", "1.5000", "archive"),
]
DEMO_SUBSIDIES: list[dict[str, Any]] = [
    {"name": "HPC Research Support", "percent": "100", "source": "hpc"},
    {"name": "Project Storage Subsidy", "percent": "50", "source": "storage", "tier": "project"},
]
DEMO_SLURM_ACCOUNTS = {
    "nguyen_lab": ("chem-md-sim", "alice.nguyen@university.example", "NSF-2026-0042"),
    "okafor_lab": ("genomics-pipeline", "bruno.okafor@university.example", "NIH-2026-0310"),
    "diaz_lab": ("astro-survey", "carmen.diaz@university.example", "NSF-2025-0931"),
    "rossi_lab": ("cfd-wind", "elena.rossi@university.example", "DOD-2026-0077"),
}
ADMIN_USERNAME = "admin"
PASSWORD_ENV = "OPENCHARGEBACK_DEMO_PASSWORD"  # noqa: S105 (the variable's name, not a password)


def invoked_as() -> str:
    """How to call this program again, as typed from here: `openchargeback` when that is on the PATH
    (an activated venv), else the path it was run by (`.venv/bin/openchargeback` after `make demo`)."""
    program = Path(sys.argv[0])
    on_path = shutil.which("openchargeback")
    if program.name != "openchargeback" or (on_path and Path(on_path).resolve() == program.resolve()):
        return "openchargeback"
    relative = os.path.relpath(program.resolve())
    return relative if not relative.startswith("..") else str(program.resolve())


class Command(ReportingCommand):
    help = (
        "Set up the database and load the demo month (fixtures/demo/, period 2026-10): sources, an account "
        "mapping, five FOCUS files, an admin user, then statements (PDFs) emailed to the PIs. Safe to run again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dir",
            type=Path,
            default=Path(settings.BASE_DIR) / "fixtures" / "demo",
            help="folder with the demo files (default: fixtures/demo of the installation)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        folder: Path = options["dir"]
        files = sorted(folder.glob(f"*_{DEMO_PERIOD}.csv"))
        if not files:
            raise Refused(f"no demo files *_{DEMO_PERIOD}.csv in {folder}")

        migrate_out = io.StringIO() if self.is_json else self.stdout
        if not self.is_json:
            self.line("Setting up the database …")
        call_command("migrate", interactive=False, verbosity=0 if self.is_json else 1, stdout=migrate_out)

        # The quick start serves with DEBUG off: without a key of its own, the installation gets one.
        key_file = (
            secret_key_file_ensure(Path(settings.DATA_DIR)) if settings.SECRET_KEY in PUBLIC_KEYS else None
        )
        if key_file is not None and not self.is_json:
            self.line(f"A secret key for this installation was written to {key_file} (keep it private).")

        created, existing = self._sources()
        mapping = services.account_mapping_set(**DEMO_MAPPING)
        rating = seed_rating()
        if not self.is_json:
            self.line()
            self.line(
                f"Sources: {', '.join(created) or 'none'} added; {', '.join(existing) or 'none'} already there."
            )
            self.line(
                f"Account mapping: {mapping.sub_account_id} → {mapping.project.project_id} "
                f"({mapping.project.pi.email}, {mapping.fund_org})"
            )
            self.line(
                f"Rated usage: {len(DEMO_RATES)} rates and {len(DEMO_SUBSIDIES)} subsidies from {DEMO_RATES_FROM} "
                f"({rating['rates_added']} and {rating['subsidies_added']} added now; `rates list`, `subsidies list`), "
                f"{rating['slurm_accounts']} Slurm accounts mapped"
            )
            self.line()

        results = [self._import(path) for path in files]
        admin = self._admin()
        statements = self._statements() if not any(not r.ok for r in results) else None
        summary = selectors.period_summary(selectors.period_get(DEMO_PERIOD))
        statement_totals = statement_selectors.period_statement_totals(summary.period)
        failed = [r for r in results if not r.ok]
        prog = invoked_as()
        next_steps = [
            f"{prog} serve",
            "open http://127.0.0.1:8000/admin/ and log in as admin",
            f"{prog} periods show {DEMO_PERIOD}",
            f"{prog} review list -p {DEMO_PERIOD}",
            f"{prog} usage slurm {_shown_path(folder / 'usage' / 'sacct_2026-11.txt')} -p 2026-11 --dry-run",
        ]

        if self.is_json:
            self.emit(
                {
                    "period": DEMO_PERIOD,
                    "sources": {"created": created, "existing": existing},
                    "mapping": {
                        "sub_account_id": mapping.sub_account_id,
                        "project_id": mapping.project.project_id,
                        "pi_email": mapping.project.pi.email,
                        "fund_org": mapping.fund_org,
                    },
                    "rating": rating,
                    "files": [file_result_json(self, r) for r in results],
                    "imported": sum(1 for r in results if r.ok and not r.skipped),
                    "skipped": sum(1 for r in results if r.skipped),
                    "failed": len(failed),
                    "admin": admin,
                    "summary": period_summary_json(self, summary, statement_totals),
                    "statements": statements,
                    "next_steps": next_steps,
                }
            )
        else:
            self.line()
            period_summary_text(self, summary, statement_totals)
            self.line()
            if admin["created"]:
                self.line(f"Admin user created: {ADMIN_USERNAME} / {admin['password']}")
                self.line(f"  (shown only this once; change it with `{prog} changepassword admin`)")
            else:
                self.line(f"Admin user {ADMIN_USERNAME!r} already exists; its password is unchanged.")
            self.line()
            self.line("Next steps:")
            self.line(f"  emails with the statement PDFs are in {settings.EMAIL_FILE_PATH}")
            self.line(f"  {next_steps[0]}")
            self.line(f"  then {next_steps[1]}")
            for step in next_steps[2:]:
                self.line(f"  {step}")
        if failed:
            message = f"{len(failed)} demo file(s) could not be imported: " + ", ".join(
                r.path.name for r in failed
            )
            self.stderr.write(f"error: {message}")
            raise AlreadyReported(message)

    def _statements(self) -> dict[str, Any]:
        """Issue and email the month's statements (closes the period; idempotent on a re-run)."""
        import json

        if not self.is_json:
            self.line()
            call_command("generate", "-p", DEMO_PERIOD, "--send", stdout=self.stdout, stderr=self.stderr)
            return {}
        out = io.StringIO()
        call_command(
            "generate", "-p", DEMO_PERIOD, "--send", "--format", "json", stdout=out, stderr=io.StringIO()
        )
        result: dict[str, Any] = json.loads(out.getvalue())
        return result

    def _sources(self) -> tuple[list[str], list[str]]:
        known = {s.slug for s in selectors.sources_all()}
        created, existing = [], []
        for slug, display_name in DEMO_SOURCES:
            if slug in known:
                existing.append(slug)
                continue
            services.source_create(
                slug=slug,
                display_name=display_name,
                filename_pattern=f"{slug}_*",
                fund_org=f"RC-RECOVERY-{slug.upper()}",
                account=CREDIT_ACCOUNT,
            )
            created.append(slug)
        return created, existing

    def _import(self, path: Path) -> FileResult:
        previous = selectors.import_completed_with_sha256(pipeline.sha256_of(path))
        if previous is not None:
            result = FileResult(path=path, skipped=f"already imported as #{previous.pk}")
        else:
            try:
                outcome = services.import_file(
                    path=path, source=path.name.split("_", 1)[0], period=DEMO_PERIOD, actor_name="demo"
                )
                result = FileResult(path=path, outcome=outcome)
            except Refused as exc:
                result = FileResult(path=path, error=exc)
        if result.error is not None or not self.is_json:
            file_result_text(self, result)
        return result

    def _admin(self) -> dict[str, Any]:
        users = get_user_model()
        if users.objects.filter(username=ADMIN_USERNAME).exists():
            return {"username": ADMIN_USERNAME, "created": False, "password": None}
        password = os.environ.get(PASSWORD_ENV) or secrets.token_urlsafe(12)
        users.objects.create_superuser(ADMIN_USERNAME, "admin@university.example", password)
        return {"username": ADMIN_USERNAME, "created": True, "password": password}


def seed_rating() -> dict[str, int]:
    """The demo's rates, subsidies and Slurm account mappings; those already there are kept."""
    from billing.rating import selectors as rating_selectors
    from billing.rating import services as rating_services

    known = {(r.source.slug, r.unit, r.tier, r.effective_from) for r in rating_selectors.rates_all()}
    rates = 0
    for slug, unit, price, tier in DEMO_RATES:
        if (slug, unit, tier, DEMO_RATES_FROM) not in known:
            rating_services.rate_add(
                source=slug,
                unit=unit,
                price=price,
                tier=tier,
                effective_from=DEMO_RATES_FROM,
                actor_name="demo",
            )
            rates += 1
    names = set(rating_selectors.subsidies_all().values_list("name", flat=True))
    subsidies = 0
    for subsidy in DEMO_SUBSIDIES:
        if subsidy["name"] not in names:
            rating_services.subsidy_add(effective_from=DEMO_RATES_FROM, actor_name="demo", **subsidy)
            subsidies += 1
    for account, (project, pi_email, fund_org) in DEMO_SLURM_ACCOUNTS.items():
        services.account_mapping_set(
            sub_account_id=account, project_id=project, pi_email=pi_email, fund_org=fund_org, source="hpc"
        )
    return {"rates_added": rates, "subsidies_added": subsidies, "slurm_accounts": len(DEMO_SLURM_ACCOUNTS)}


def _shown_path(path: Path) -> Path:
    """The path as a next step should print it: relative when under the current folder, so the
    command works as shown from here; absolute otherwise."""
    path = path.resolve()
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
