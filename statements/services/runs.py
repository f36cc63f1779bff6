"""Issuing and sending a period's statements as one run: what the admin's buttons and the
`generate` / `send` commands share. A run prepares its work here (generate, queue deliveries),
hands it to `dispatch.run_and_wait`, and is audited with who started it.

The admin runs it as a Celery task and keeps the run's figures in the cache under a run id
(`run_state_*`): the page polls them, while rendering and sending progress is read from the
database (`selectors.dispatch_progress`), so it is right however many workers take part. With
workers, the cache must be shared between the web and worker processes (CACHE_URL, e.g. Redis).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import cache

from billing import selectors as billing_selectors
from chargeback.logging import audit
from chargeback.money import format_money

from .. import selectors
from .delivery import QueueOutcome, deliveries_queue
from .dispatch import RunReport, run_and_wait, run_collect
from .generate import GenerateOutcome, statements_generate

RUN_KINDS = ("issue", "send", "resend")
RUN_TTL_SECONDS = 24 * 3600


def _actor_name(actor: Any) -> str:
    return actor.get_username() if actor is not None and hasattr(actor, "get_username") else ""


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


# --- admin runs (a Celery task, followed by the page through the cache) -----------------------


def _key(run_id: str) -> str:
    return f"statements:run:{run_id}"


def run_state_get(run_id: str) -> dict[str, Any] | None:
    return cache.get(_key(run_id))


def _run_state_set(run_id: str, state: dict[str, Any]) -> None:
    cache.set(_key(run_id), state, RUN_TTL_SECONDS)


def run_start(*, kind: str, period: str, actor: Any) -> str:
    """Record a run as queued and return its id (the task then carries it out)."""
    if kind not in RUN_KINDS:
        raise ValueError(f"unknown run kind {kind!r}")
    run_id = uuid.uuid4().hex
    _run_state_set(
        run_id,
        {
            "kind": kind,
            "period": period,
            "actor": _actor_name(actor),
            "state": "queued",
            "error": "",
            "statement_ids": [],
            "delivery_ids": [],
            "issued": [],
            "summary": "",
        },
    )
    audit("statements_run_started", actor=_actor_name(actor), kind=kind, period=period, run=run_id)
    return run_id


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


def run_execute(*, run_id: str, actor: Any = None) -> dict[str, Any]:
    """Carry out a queued run: issue (generate) or send / resend failed, then dispatch the PDFs and
    emails without waiting for them (a task waiting for other tasks could hold the only worker).
    A refusal (finalized period, statements out of date) ends the run with its reason."""
    from chargeback.errors import Refused

    state = run_state_get(run_id)
    if state is None:
        raise Refused(f"no statements run {run_id} (expired?)")
    state["state"] = "running"
    _run_state_set(run_id, state)
    kind, period = state["kind"], state["period"]
    try:
        if kind == "issue":
            outcome = statements_generate(period=period, actor=actor)
            state["statement_ids"] = list(outcome.to_render)
            state["issued"] = _issued_rows(outcome)
            state["summary"] = (
                f"{len(outcome.statements)} current statement(s): {outcome.count('new')} new, "
                f"{outcome.count('revised')} revised, {outcome.count('unchanged')} unchanged"
                + (f", {len(outcome.withdrawn)} withdrawn" if outcome.withdrawn else "")
                + f"; due {format_money(outcome.billed_total, outcome.currency)}"
            )
        else:
            plan = statements_send_prepare(period=period, resend_failed=kind == "resend", actor=actor)
            state["statement_ids"] = plan.unrendered
            state["delivery_ids"] = plan.delivery_ids
            state["summary"] = (
                f"{len(plan.delivery_ids)} email(s) to send"
                + (f"; {len(plan.queue.already_sent)} PI(s) already sent" if plan.queue.already_sent else "")
                + (
                    f"; {len(plan.queue.failed_before)} failed earlier (use Resend failed)"
                    if plan.queue.failed_before and kind == "send"
                    else ""
                )
            )
    except Refused as exc:
        state["state"], state["error"] = "failed", str(exc)
        _run_state_set(run_id, state)
        audit(
            "statements_run_refused",
            actor=state["actor"],
            kind=kind,
            period=period,
            run=run_id,
            error=str(exc),
        )
        return state
    state["state"] = "dispatched"
    _run_state_set(run_id, state)
    report = run_and_wait(state["statement_ids"], state["delivery_ids"], wait=False)
    audit(
        "statements_run_dispatched",
        actor=state["actor"],
        kind=kind,
        period=period,
        run=run_id,
        pdfs=len(state["statement_ids"]),
        emails=len(state["delivery_ids"]),
        done=report.done,
    )
    return state


def run_status(run_id: str) -> dict[str, Any] | None:
    """A run as the progress bar shows it: state, units done of total, and the result lists."""
    state = run_state_get(run_id)
    if state is None:
        return None
    statement_ids, delivery_ids = state["statement_ids"], state["delivery_ids"]
    progress = selectors.dispatch_progress(statement_ids, delivery_ids)
    finished = state["state"] == "failed" or (state["state"] == "dispatched" and progress.done)
    status: dict[str, Any] = {
        "run": run_id,
        "kind": state["kind"],
        "period": state["period"],
        "state": "done" if finished and not state["error"] else state["state"],
        "error": state["error"],
        "summary": state["summary"],
        "done": progress.completed,
        "total": progress.total,
        "finished": finished,
        "pdfs": {"rendered": progress.rendered, "total": progress.renders, "failed": progress.render_failed},
        "emails": {"sent": progress.sent, "total": progress.deliveries, "failed": progress.failed},
        "issued": state["issued"],
    }
    if finished and not state["error"]:
        report: RunReport = run_collect(statement_ids, delivery_ids)
        status["sent"] = [d.recipient for d in report.sent]
        status["failed"] = [{"recipient": d.recipient, "error": d.error} for d in report.failed]
        status["render_failed"] = [
            {"statement": s.label, "error": s.render_error} for s in report.render_failed
        ]
    return status


def statements_preview_run(*, period: str, actor: Any = None) -> tuple[GenerateOutcome, Any]:
    """What issuing would do now (a dry run, nothing written) and its DRAFT PDFs, audited."""
    from ..previews import statements_preview

    outcome = statements_generate(period=period, dry_run=True)
    preview = statements_preview(outcome=outcome)
    audit(
        "statements_previewed",
        actor=_actor_name(actor),
        period=period,
        new=outcome.count("new"),
        revised=outcome.count("revised"),
        unchanged=outcome.count("unchanged"),
        withdrawn=len(outcome.withdrawn),
    )
    return outcome, preview
