"""Output shared by the billing commands (a leading underscore: not a command itself)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from billing.selectors import ProjectTotals
from billing.services import ImportOutcome
from chargeback.commands import ReportingCommand, refusal_errors, refusal_text
from chargeback.errors import Refused
from chargeback.money import ZERO

UNATTRIBUTED = "(unattributed)"


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


# --- imports ------------------------------------------------------------------------------


@dataclass
class FileResult:
    """One file of an ingest: its outcome, or why it failed, or why it was skipped."""

    path: Path
    outcome: ImportOutcome | None = None
    error: Refused | None = None
    skipped: str = ""
    skipped_import: int | None = None  # skipped: the import that holds these bytes already

    @property
    def ok(self) -> bool:
        return self.error is None


def file_message(name: str, text: str) -> str:
    """'name: message', unless the message names the file already (ingest errors do)."""
    return text if text.startswith(name) else f"{name}: {text}"


def file_result_json(cmd: ReportingCommand, result: FileResult) -> dict[str, Any]:
    doc: dict[str, Any] = {"file": str(result.path), "ok": result.ok}
    if result.skipped:
        doc["skipped"] = result.skipped
        doc["import_id"] = result.skipped_import
    if result.error is not None:
        doc["error"] = str(result.error)
        doc["errors"] = refusal_errors(result.error)
    out = result.outcome
    if out is not None:
        doc.update(
            {
                "source": out.source,
                "source_created": out.source_created,
                "period": out.period,
                "import_id": out.import_id,
                "status": out.status,
                "dry_run": out.dry_run,
                "rows": out.rows,
                "charges": out.charges,
                "flagged": out.flagged,
                "list": cmd.money(out.list_total),
                "billed": cmd.money(out.billed_total),
                "discount": cmd.money(out.list_total - out.billed_total),
                "mode": out.mode,
                "supersedes": out.supersedes,
                "parts": [
                    {
                        "period": part.period,
                        "import_id": part.import_id,
                        "rows": part.rows,
                        "charges": part.charges,
                        "flagged": part.flagged,
                        "list": cmd.money(part.list_total),
                        "billed": cmd.money(part.billed_total),
                        "mismatched_rows": part.mismatched_rows,
                    }
                    for part in out.parts
                ],
                "decisions_carried": out.decisions_carried,
                "warnings": out.warnings,
                "seconds": round(out.seconds, 3),
            }
        )
    return doc


def file_result_text(cmd: ReportingCommand, result: FileResult) -> None:
    name = result.path.name
    if result.skipped:
        cmd.line(f"{name}: skipped, {result.skipped}")
        return
    if result.error is not None:
        cmd.stderr.write(f"error: {file_message(name, refusal_text(result.error))}")
        return
    out = result.outcome
    assert out is not None
    if out.source_created:
        cmd.line(
            f"new source {out.source!r} ({out.source_name})" + (": would be created" if out.dry_run else "")
        )
    split = len(out.parts) > 1
    where = f"{out.source} {', '.join(p.period for p in out.parts) or out.period}"
    if out.dry_run:
        head = f"{name} → {where}, dry run (nothing written)"
    else:
        numbers = ", ".join(f"#{p.import_id}" for p in out.parts) or f"#{out.import_id}"
        head = f"{name} → {where}, import{'s' if split else ''} {numbers}"
    cmd.line(head + (" (its rows span several billing periods: one import each)" if split else ""))
    cmd.line(
        f"  rows {out.rows:,} · charges {out.charges:,} · flagged {out.flagged:,} · "
        f"list {cmd.fmt(out.list_total)} · billed {cmd.fmt(out.billed_total)} · {out.seconds:.2f} s"
    )
    for part in out.parts:
        if split:
            cmd.line(
                f"  {part.period}: rows {part.rows:,} · charges {part.charges:,} · flagged {part.flagged:,} · "
                f"billed {cmd.fmt(part.billed_total)}"
            )
        for month, rows in part.mismatched_rows.items():
            cmd.line(
                f"  {plural(rows, 'row')} of {month} kept in {part.period}, flagged "
                f"'billing period mismatch (row says {month})'"
            )
    cmd.line(f"  {_mode_text(out)}")
    if out.decisions_carried:
        cmd.line(f"  {plural(out.decisions_carried, 'review decision')} carried over")
    for warning in out.warnings:
        cmd.line(f"  warning: {warning}")


def _mode_text(out: ImportOutcome) -> str:
    """How the file met the earlier imports of its source and period(s)."""
    would = out.dry_run
    numbers = ", ".join(f"#{i}" for i in out.supersedes)
    if out.mode == "replaced":
        return f"{'would replace' if would else 'replaced'} every earlier import ({numbers}): --replace"
    if out.mode == "superseded":
        return f"{'would supersede' if would else 'superseded'} import {numbers}: the same file name again"
    return f"{'would be added' if would else 'added'} to the source's other imports of the period"


def import_totals(results: list[FileResult]) -> dict[str, Any]:
    done = [r.outcome for r in results if r.outcome is not None]
    return {
        "rows": sum(o.rows for o in done),
        "charges": sum(o.charges for o in done),
        "flagged": sum(o.flagged for o in done),
        "list": sum((o.list_total for o in done), ZERO),
        "billed": sum((o.billed_total for o in done), ZERO),
    }


# --- period summary -----------------------------------------------------------------------


def project_totals_json(cmd: ReportingCommand, row: ProjectTotals) -> dict[str, Any]:
    return {
        "pi_email": row.pi_email,
        "project_id": row.project_code,
        "fund_org": row.fund_org,
        "charges": row.charges,
        "list": cmd.money(row.list_total),
        "billed": cmd.money(row.billed_total),
        "discount": cmd.money(row.discount),
        "flagged": row.flagged_count,
        "flagged_billed": cmd.money(row.flagged_billed),
    }


def project_table(cmd: ReportingCommand, rows: list[ProjectTotals], *, with_pi: bool) -> None:
    headers = ["PROJECT", "FUND/ORG", "CHARGES", "LIST", "BILLED", "FLAGGED", "FLAGGED BILLED"]
    if with_pi:
        headers.insert(0, "PI")
    body = []
    for row in rows:
        line: list[Any] = [
            row.project_code or "-",
            row.fund_org or "-",
            f"{row.charges:,}",
            cmd.fmt(row.list_total),
            cmd.fmt(row.billed_total),
            f"{row.flagged_count:,}",
            cmd.fmt(row.flagged_billed),
        ]
        if with_pi:
            line.insert(0, row.pi_email or UNATTRIBUTED)
        body.append(line)
    offset = 1 if with_pi else 0
    cmd.table(headers, body, right=[i + offset for i in (2, 3, 4, 5, 6)])


def totals_of(rows: list[ProjectTotals]) -> ProjectTotals:
    """The sum of several rows (e.g. all projects of a PI)."""
    return ProjectTotals(
        pi_email=rows[0].pi_email if rows else "",
        project_code="",
        fund_org="",
        charges=sum(r.charges for r in rows),
        list_total=sum((r.list_total for r in rows), ZERO),
        billed_total=sum((r.billed_total for r in rows), ZERO),
        flagged_count=sum(r.flagged_count for r in rows),
        flagged_billed=sum((r.flagged_billed for r in rows), ZERO),
    )
