"""Shared by `generate` and `send` (a leading underscore: not a command itself): dispatching the
tasks, waiting for them with a progress bar, and the output of statements and deliveries."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import CommandParser

from chargeback.commands import AlreadyReported, ProgressBar, ReportingCommand
from statements.models import Delivery, Statement
from statements.services import GenerateOutcome, QueueOutcome, StatementResult, dispatch
from statements.services.dispatch import RunReport


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


# --- running and waiting ------------------------------------------------------------------------


def run_and_wait(
    cmd: ReportingCommand,
    statement_ids: list[int],
    delivery_ids: list[int],
    *,
    wait: bool = True,
    timeout: float = 0,
    poll: float = 0.5,
) -> RunReport:
    """The shared dispatch-and-wait service, with a progress bar and notices on stderr."""
    bar = ProgressBar(sys.stderr, len(statement_ids) + len(delivery_ids), enabled=not cmd.is_json)
    try:
        return dispatch.run_and_wait(
            statement_ids,
            delivery_ids,
            wait=wait,
            timeout=timeout,
            poll=poll,
            on_progress=lambda done, total, detail: bar.update(done, detail),
            on_notice=lambda message: cmd.stderr.write(f"\n{message}"),
        )
    finally:
        bar.finish()


def warn_if_emails_go_to_files(cmd: ReportingCommand) -> None:
    """Say loudly, on stderr, when statement emails will not reach a mail server, and where they go."""
    backend = settings.EMAIL_BACKEND
    if backend.endswith("filebased.EmailBackend"):
        where = Path(settings.EMAIL_FILE_PATH).resolve()
        cmd.stderr.write(
            f"warning: emails are written as files in {where}, not sent to a mail server "
            "(dev_mode: true, or no smtp settings in config.yaml / EMAIL_URL)"
        )
    elif backend.endswith("console.EmailBackend"):
        cmd.stderr.write("warning: emails are printed on the console, not sent to a mail server")


def add_wait_arguments(parser: CommandParser) -> None:
    """--no-wait and --timeout, for commands that hand work to the task queue."""
    parser.add_argument(
        "--no-wait", action="store_true", help="with workers: return once the tasks are queued"
    )
    parser.add_argument(
        "--timeout", type=float, default=0, help="seconds to wait for the workers (default: no limit)"
    )


def dispatch_and_report(
    cmd: ReportingCommand,
    statement_ids: list[int],
    delivery_ids: list[int],
    *,
    options: dict[str, Any],
    document: Callable[[], dict[str, Any]],
    notes_before: Sequence[str] = (),
    notes_after: Sequence[str] = (),
) -> None:
    """Render these PDFs and send these emails (waiting unless --no-wait), then report: the JSON
    `document` (built once the PDFs exist) with the run in it, or the text report between the
    command's notes. A PDF or email that failed is an error (exit 1), after the report."""
    if delivery_ids:
        warn_if_emails_go_to_files(cmd)
    report = run_and_wait(
        cmd, statement_ids, delivery_ids, wait=not options["no_wait"], timeout=options["timeout"]
    )
    problems = failure_message(report)
    if cmd.is_json:
        output = document()
        output["run"] = report_json(report)
        if problems:
            output["error"] = problems
        cmd.emit(output)
    else:
        for note in notes_before:
            cmd.line(note)
        report_text(cmd, report, pdfs=len(statement_ids), emails=len(delivery_ids))
        for note in notes_after:
            cmd.line(note)
        if problems:
            cmd.stderr.write(f"error: {problems}")
    if problems:
        raise AlreadyReported(problems)


def failure_message(report: RunReport) -> str:
    parts = []
    if report.render_failed:
        parts.append(f"{plural(len(report.render_failed), 'PDF')} could not be rendered")
    if report.failed:
        parts.append(f"{plural(len(report.failed), 'email')} failed (resend with `send --resend-failed`)")
    return "; ".join(parts)


# --- output ---------------------------------------------------------------------------------------


def statement_json(cmd: ReportingCommand, result: StatementResult, pdfs: dict[int, str]) -> dict[str, Any]:
    return {
        "number": result.number,
        "version": result.version,
        "label": result.label,
        "status": result.status,
        "statement_id": result.statement_id,
        "pi_email": result.pi_email,
        "project_id": result.project_code,
        "fund_org": result.fund_org,
        "list": cmd.money(result.list_total),
        "discount": cmd.money(result.discount_total),
        "billed": cmd.money(result.billed_total),
        "held_back": {"charges": result.held_back_count, "billed": cmd.money(result.held_back_amount)},
        "replaces": result.replaces or None,
        "pdf": pdfs.get(result.statement_id) if result.statement_id else None,
    }


def generate_json(cmd: ReportingCommand, outcome: GenerateOutcome) -> dict[str, Any]:
    ids = [r.statement_id for r in outcome.statements + outcome.withdrawn if r.statement_id]
    pdfs = {pk: name for pk, name in Statement.objects.filter(pk__in=ids).values_list("pk", "pdf") if name}
    return {
        "period": outcome.period,
        "dry_run": outcome.dry_run,
        "pi": outcome.pi_email,
        "currency": outcome.currency,
        "counts": {
            "statements": len(outcome.statements),
            "new": outcome.count("new"),
            "revised": outcome.count("revised"),
            "unchanged": outcome.count("unchanged"),
            "withdrawn": len(outcome.withdrawn),
        },
        "totals": {
            "list": cmd.money(outcome.list_total),
            "discount": cmd.money(outcome.list_total - outcome.billed_total),
            "billed": cmd.money(outcome.billed_total),
        },
        "statements": [statement_json(cmd, r, pdfs) for r in outcome.statements],
        "withdrawn": [statement_json(cmd, r, pdfs) for r in outcome.withdrawn],
        "held_back": {
            "charges": outcome.held_back_count,
            "billed": cmd.money(outcome.held_back_billed),
            "without_statement": [
                {
                    "pi_email": h.pi_email or None,
                    "project_id": h.project_code,
                    "charges": h.count,
                    "billed": cmd.money(h.billed),
                }
                for h in outcome.held_back_elsewhere
            ],
        },
        "rejected": {"charges": outcome.rejected_count, "billed": cmd.money(outcome.rejected_billed)},
        "unbillable": {"charges": outcome.unbillable_count, "billed": cmd.money(outcome.unbillable_billed)},
    }


def generate_text(cmd: ReportingCommand, outcome: GenerateOutcome) -> None:
    counts = [
        f"{outcome.count('new')} new",
        f"{outcome.count('revised')} revised",
        f"{outcome.count('unchanged')} unchanged",
    ]
    if outcome.withdrawn:
        counts.append(f"{len(outcome.withdrawn)} withdrawn")
    scope = f" for {outcome.pi_email}" if outcome.pi_email else ""
    head = "Dry run, nothing written. Would issue: " if outcome.dry_run else ""
    cmd.line(
        f"{head}{plural(len(outcome.statements), 'statement')} of {outcome.period}{scope}: "
        + ", ".join(counts)
    )
    if outcome.statements:
        cmd.line()
        rows = []
        for r in outcome.statements:
            rows.append(
                [
                    r.label,
                    r.status + (f" (replaces v{r.version - 1})" if r.status == "revised" else ""),
                    r.pi_email,
                    r.project_code or "(no project)",
                    r.fund_org or "-",
                    cmd.fmt(r.list_total),
                    cmd.fmt(r.discount_total),
                    cmd.fmt(r.billed_total),
                    cmd.fmt(r.held_back_amount) if r.held_back_count else "",
                ]
            )
        cmd.table(
            ["STATEMENT", "STATUS", "PI", "PROJECT", "FUND/ORG", "LIST", "DISCOUNT", "DUE", "HELD BACK"],
            rows,
            right=[5, 6, 7, 8],
        )
        cmd.line(
            f"\nTotal due {cmd.fmt(outcome.billed_total)} (list {cmd.fmt(outcome.list_total)}, "
            f"discount {cmd.fmt(outcome.list_total - outcome.billed_total)})"
        )
    for r in outcome.withdrawn:
        verb = "would be withdrawn" if outcome.dry_run else "withdrawn"
        cmd.line(f"{r.label} {r.pi_email} {r.project_code}: {verb}, no billable charges remain")
    if outcome.held_back_count:
        cmd.line(
            f"Held back: {plural(outcome.held_back_count, 'flagged charge')} "
            f"({cmd.fmt(outcome.held_back_billed)}) await review and are not billed"
        )
        for h in outcome.held_back_elsewhere:
            who = h.pi_email or "(unattributed)"
            cmd.line(
                f"  {who} {h.project_code or '(no project)'}: {plural(h.count, 'charge')} {cmd.fmt(h.billed)}, no statement"
            )
    if outcome.rejected_count:
        cmd.line(
            f"Rejected: {plural(outcome.rejected_count, 'charge')} ({cmd.fmt(outcome.rejected_billed)}) excluded"
        )
    if outcome.unbillable_count:
        cmd.stderr.write(
            f"warning: {plural(outcome.unbillable_count, 'billable charge')} ({cmd.fmt(outcome.unbillable_billed)}) "
            "have no PI and are on no statement; correct their attribution or reject them"
        )


def queue_text(cmd: ReportingCommand, queue: QueueOutcome) -> None:
    if queue.interrupted:
        cmd.stderr.write(
            f"warning: {plural(queue.interrupted, 'delivery', 'deliveries')} were interrupted while sending and "
            "are marked failed; the message may have gone out: check before `--resend-failed`"
        )
    for delivery in queue.failed_before:
        cmd.stderr.write(
            f"warning: {delivery.recipient}: failed earlier ({delivery.error}); use --resend-failed to try again"
        )


def queue_json(queue: QueueOutcome) -> dict[str, Any]:
    return {
        "queued": len(queue.queued),
        "requeued": queue.requeued,
        "pending": len(queue.pending),
        "already_sent": queue.already_sent,
        "failed_not_requeued": [
            {"delivery_id": d.pk, "recipient": d.recipient, "error": d.error} for d in queue.failed_before
        ],
        "interrupted": queue.interrupted,
    }


def delivery_json(delivery: Delivery) -> dict[str, Any]:
    return {
        "delivery_id": delivery.pk,
        "recipient": delivery.recipient,
        "state": delivery.state,
        "attempts": delivery.attempts,
        "statements": [s.label for s in delivery.statements.order_by("sequence")],
        "message_id": delivery.message_id or None,
        "error": delivery.error or None,
    }


def report_json(report: RunReport) -> dict[str, Any]:
    return {
        "waited": report.waited,
        "rendered": report.rendered,
        "render_failed": [{"statement": s.label, "error": s.render_error} for s in report.render_failed],
        "emails": {
            "sent": [delivery_json(d) for d in report.sent],
            "failed": [delivery_json(d) for d in report.failed],
            "unfinished": [delivery_json(d) for d in report.unfinished],
        },
    }


def report_text(cmd: ReportingCommand, report: RunReport, *, pdfs: int, emails: int) -> None:
    if not report.waited:
        cmd.line(f"Queued {plural(pdfs, 'PDF')} and {plural(emails, 'email')} for the workers (not waiting).")
        return
    if pdfs:
        cmd.line(f"Rendered {plural(report.rendered, 'PDF')} of {pdfs}.")
    for statement in report.render_failed:
        cmd.stderr.write(f"error: PDF of {statement.label}: {statement.render_error}")
    if emails:
        cmd.line(f"Sent {plural(len(report.sent), 'email')} of {emails}.")
    for delivery in report.sent:
        labels = ", ".join(s.label for s in delivery.statements.order_by("sequence"))
        cmd.line(f"  {delivery.recipient}: {labels}")
    for delivery in report.failed:
        cmd.stderr.write(f"error: email to {delivery.recipient} failed: {delivery.error}")
    for delivery in report.unfinished:
        cmd.stderr.write(f"warning: email to {delivery.recipient} is still {delivery.state}")
