"""Issuing and sending a period's statements as one run: what the admin's buttons and the
`generate` / `send` commands share. A run prepares its work here (generate, queue deliveries),
hands it to `dispatch.run_and_wait`, and is audited with who started it.

The admin's runs are recorded in the database (`StatementRun`): the view records the run as
queued, a Celery task carries it out (`statement_run_execute`) and follows its PDFs and emails
(`statement_run_refresh`) until they are done; the run page polls the record. Progress is counted
from the statements and deliveries themselves (`selectors.dispatch_progress`), so any number of
workers report into the same figures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from billing import selectors as billing_selectors
from chargeback.actors import actor_fields
from chargeback.errors import Refused
from chargeback.logging import audit
from chargeback.money import format_money

from .. import selectors
from ..models import StatementRun
from .delivery import QueueOutcome, deliveries_queue
from .dispatch import run_and_wait, run_collect
from .generate import GenerateOutcome, statements_generate

logger = logging.getLogger("statements.services")

# The runs a task carries out (a preview runs at once, in the request).
RUN_KINDS = (StatementRun.Kind.ISSUE, StatementRun.Kind.SEND, StatementRun.Kind.RESEND)


@dataclass
class SendPlan:
    """Deliveries queued for a send and the PDFs they still need (an interrupted generate)."""

    queue: QueueOutcome
    delivery_ids: list[int] = field(default_factory=list)
    unrendered: list[int] = field(default_factory=list)


def statements_send_prepare(
    *, period: str, pi_email: str | None = None, resend_failed: bool = False, actor: Any = None
) -> SendPlan:
    """Queue the period's unsent deliveries (and failed ones again with `resend_failed`); the PDFs
    they carry that are still missing render ahead of the emails."""
    queue = deliveries_queue(period=period, pi_email=pi_email, resend_failed=resend_failed, actor=actor)
    delivery_ids = [d.pk for d in queue.to_send]
    unrendered = list(
        selectors.current_statements(billing_selectors.period_get(period), pi_email=pi_email)
        .filter(pdf="", deliveries__in=delivery_ids)
        .values_list("pk", flat=True)
        .distinct()
    )
    return SendPlan(queue=queue, delivery_ids=delivery_ids, unrendered=unrendered)


# --- admin runs (recorded in the database, carried out by a Celery task) ----------------------


def statement_run_start(*, kind: str, period: str, actor: Any) -> StatementRun:
    """Record a run as queued (a task then carries it out, `statement_run_execute`)."""
    if kind not in RUN_KINDS:
        raise ValueError(f"unknown run kind {kind!r}")
    run = _run_create(kind=kind, period=period, actor=actor)
    _audit("statements_run_started", run)
    return run


def _run_create(*, kind: str, period: str, actor: Any, **fields: Any) -> StatementRun:
    who = actor_fields(actor, "")
    return StatementRun.objects.create(
        kind=kind,
        period=billing_selectors.period_get(period),
        requested_by=who["actor"],
        requested_by_name=who["actor_name"],
        progressed_at=timezone.now(),
        **fields,
    )


def _audit(event: str, run: StatementRun, **fields: Any) -> None:
    """An audit event of a run: who asked for it, which run, of what kind and period."""
    audit(event, actor=run.requested_by_name, kind=run.kind, period=run.period.period, run=run.pk, **fields)


def _issued_rows(outcome: GenerateOutcome) -> list[dict[str, Any]]:
    return [
        {
            "label": r.label,
            "status": r.status,
            "pi_email": r.pi_email,
            "project": r.project_code or "(no project)",
            "billed": format_money(r.billed_total, outcome.currency),
            "statement_id": r.statement_id,
        }
        for r in outcome.statements + outcome.withdrawn
        if r.status != "unchanged"
    ]


def _generate_summary(outcome: GenerateOutcome) -> str:
    return (
        f"{len(outcome.statements)} current statement(s): {outcome.count('new')} new, "
        f"{outcome.count('revised')} revised, {outcome.count('unchanged')} unchanged"
        + (f", {len(outcome.withdrawn)} withdrawn" if outcome.withdrawn else "")
        + f"; due {format_money(outcome.billed_total, outcome.currency)}"
    )


def _run_prepare(run: StatementRun) -> None:
    """Issue (generate) or queue the emails of a send / resend; the run records the PDFs and
    emails that its dispatch hands to the workers."""
    period = run.period.period
    if run.kind == StatementRun.Kind.ISSUE:
        outcome = statements_generate(period=period, actor=run.requested_by, actor_name=run.requested_by_name)
        run.statement_ids, run.delivery_ids = list(outcome.to_render), []
        run.result = {"issued": _issued_rows(outcome)}
        run.summary = _generate_summary(outcome)
        return
    plan = statements_send_prepare(
        period=period, resend_failed=run.kind == StatementRun.Kind.RESEND, actor=run.requested_by
    )
    run.statement_ids, run.delivery_ids = plan.unrendered, plan.delivery_ids
    run.summary = (
        f"{len(plan.delivery_ids)} email(s) to send"
        + (f"; {len(plan.queue.already_sent)} PI(s) already sent" if plan.queue.already_sent else "")
        + (
            f"; {len(plan.queue.failed_before)} failed earlier (use Resend failed)"
            if plan.queue.failed_before and run.kind == StatementRun.Kind.SEND
            else ""
        )
    )


def _run_fail(run: StatementRun, error: str, *, refused: bool) -> None:
    now = timezone.now()
    run.state, run.error = StatementRun.State.FAILED, error
    run.result = {**run.result, "refused": refused}
    run.finished_at = run.progressed_at = now
    run.save()
    _audit("statements_run_refused" if refused else "statements_run_failed", run, error=error)


def statement_run_execute(*, run_id: int) -> StatementRun:
    """Carry out a queued run for whoever requested it: issue (generate) or send / resend failed,
    then dispatch the PDFs and emails without waiting for them (a task waiting for other tasks
    could hold the only worker; `statement_run_refresh` follows them). A refusal (finalized
    period, statements out of date) or an error ends the run as failed, with its reason. A task
    delivered again after its worker died prepares the run again (generate and queueing are
    idempotent) unless its work was already dispatched."""
    with transaction.atomic():
        run = StatementRun.objects.select_for_update().select_related("period").filter(pk=run_id).first()
        if run is None:
            raise Refused(f"no statements run {run_id}")
        if run.is_finished or run.dispatched_at is not None:
            return run
        now = timezone.now()
        run.state, run.started_at, run.progressed_at = StatementRun.State.RUNNING, now, now
        run.save(update_fields=["state", "started_at", "progressed_at"])
    try:
        _run_prepare(run)
        run.pdfs_total, run.emails_total = len(run.statement_ids), len(run.delivery_ids)
        run.progressed_at = timezone.now()
        run.save()
        report = run_and_wait(run.statement_ids, run.delivery_ids, wait=False)
    except Refused as exc:
        _run_fail(run, str(exc), refused=True)
        return run
    except Exception as exc:
        logger.exception("statements run %s failed", run.pk)
        _run_fail(run, f"{type(exc).__name__}: {exc}", refused=False)
        return run
    run.dispatched_at = timezone.now()
    run.save(update_fields=["dispatched_at"])
    _audit("statements_run_dispatched", run, pdfs=run.pdfs_total, emails=run.emails_total, done=report.done)
    return statement_run_refresh(run_id=run.pk) or run


_COUNTS = ("pdfs_rendered", "pdfs_failed", "emails_sent", "emails_failed")


def statement_run_refresh(*, run_id: int) -> StatementRun | None:
    """Record how far a dispatched run's PDFs and emails have come (its last progress moves only
    when a count changes), and finish it once every one is done or failed: the run then keeps
    what was sent, what failed and which PDFs were not rendered. Idempotent; the follow-up task
    and the run page both call it. None for an unknown run."""
    run = StatementRun.objects.select_related("period").filter(pk=run_id).first()
    if run is None or run.state != StatementRun.State.RUNNING or run.dispatched_at is None:
        return run
    progress = selectors.dispatch_progress(run.statement_ids, run.delivery_ids)
    counts = dict(
        zip(_COUNTS, (progress.rendered, progress.render_failed, progress.sent, progress.failed), strict=True)
    )
    changed = any(getattr(run, name) != value for name, value in counts.items())
    if not changed and not progress.done:
        return run
    with transaction.atomic():
        run = StatementRun.objects.select_for_update().select_related("period").get(pk=run_id)
        if run.state != StatementRun.State.RUNNING:
            return run
        now = timezone.now()
        for name, value in counts.items():
            setattr(run, name, value)
        run.progressed_at = now
        fields = [*_COUNTS, "progressed_at"]
        if progress.done:
            report = run_collect(run.statement_ids, run.delivery_ids)
            run.result = {
                **run.result,
                "sent": [d.recipient for d in report.sent],
                "failed": [{"recipient": d.recipient, "error": d.error} for d in report.failed],
                "render_failed": [
                    {"statement": s.label, "error": s.render_error} for s in report.render_failed
                ],
            }
            run.state, run.finished_at = StatementRun.State.DONE, now
            fields += ["result", "state", "finished_at"]
        run.save(update_fields=fields)
    if run.state == StatementRun.State.DONE:
        _audit(
            "statements_run_finished",
            run,
            rendered=run.pdfs_rendered,
            sent=run.emails_sent,
            failed=run.pdfs_failed + run.emails_failed,
        )
    return run


def statements_preview_run(*, period: str, actor: Any = None) -> tuple[GenerateOutcome, Any]:
    """What issuing would do now (a dry run, nothing issued) and its DRAFT PDFs, recorded as a
    run of its own (done at once) and audited."""
    from ..previews import statements_preview

    run = _run_create(
        kind=StatementRun.Kind.PREVIEW,
        period=period,
        actor=actor,
        state=StatementRun.State.RUNNING,
        started_at=timezone.now(),
    )
    try:
        outcome = statements_generate(period=period, dry_run=True)
        preview = statements_preview(outcome=outcome)
    except Refused as exc:
        _run_fail(run, str(exc), refused=True)
        raise
    run.summary = _generate_summary(outcome) + f"; {len(preview.files)} DRAFT PDF(s)"
    run.state, run.finished_at = StatementRun.State.DONE, timezone.now()
    run.save(update_fields=["summary", "state", "finished_at"])
    _audit(
        "statements_previewed",
        run,
        new=outcome.count("new"),
        revised=outcome.count("revised"),
        unchanged=outcome.count("unchanged"),
        withdrawn=len(outcome.withdrawn),
    )
    return outcome, preview
