"""Dispatch-and-wait: the one way the admin and the commands start rendering and sending and
follow it to the end. Not re-exported by `statements.services` (it drives the tasks, which call
the services: importing it there would make a cycle).

`run_and_wait` dispatches the tasks and, unless told not to, waits for them: eagerly (no broker)
they are done on return; with workers the database is polled, stalled work is queued again, and
`on_progress(done, total, detail)` reports each change. `run_collect` says what a run achieved at
any time, so a caller that does not wait (the admin's progress bar) asks again later.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings

from chargeback.errors import Refused

from .. import selectors, tasks
from ..models import Delivery, Statement
from . import delivery as delivery_services

ProgressCallback = Callable[[int, int, str], None]
Notice = Callable[[str], None]

# Without progress for this long the caller is told to check that a worker runs.
STALL_HINT_SECONDS = 60


@dataclass
class RunReport:
    """What rendering and sending achieved."""

    rendered: int = 0
    render_failed: list[Statement] = field(default_factory=list)
    sent: list[Delivery] = field(default_factory=list)
    failed: list[Delivery] = field(default_factory=list)
    unfinished: list[Delivery] = field(default_factory=list)
    waited: bool = True
    renders: int = 0
    emails: int = 0

    @property
    def done(self) -> bool:
        return self.waited and not self.unfinished and self.rendered + len(self.render_failed) >= self.renders


def _progress_detail(progress: selectors.Progress) -> str:
    return f"PDFs {progress.rendered}/{progress.renders}  emails {progress.sent}/{progress.deliveries}"


def run_and_wait(
    statement_ids: list[int],
    delivery_ids: list[int],
    *,
    wait: bool = True,
    timeout: float = 0,
    poll: float = 0.5,
    on_progress: ProgressCallback | None = None,
    on_notice: Notice | None = None,
) -> RunReport:
    """Render these statements' PDFs and send these deliveries; wait for the end unless `wait` is
    false (then the report says what is done so far, `waited` false). A timeout raises Refused;
    the workers carry on."""
    total = len(statement_ids) + len(delivery_ids)
    done_units = 0

    def advance(units: int) -> None:
        nonlocal done_units
        done_units += units
        if on_progress:
            on_progress(done_units, total, "")

    done_eagerly = tasks.dispatch(statement_ids, delivery_ids, on_progress=advance)
    if not done_eagerly and wait:
        _wait(
            statement_ids,
            delivery_ids,
            timeout=timeout,
            poll=poll,
            on_progress=on_progress,
            on_notice=on_notice,
        )
    report = run_collect(statement_ids, delivery_ids)
    report.waited = done_eagerly or wait
    return report


def _wait(
    statement_ids: list[int],
    delivery_ids: list[int],
    *,
    timeout: float,
    poll: float,
    on_progress: ProgressCallback | None,
    on_notice: Notice | None,
) -> None:
    started = last_change = last_redispatch = time.monotonic()
    last_done, hinted = -1, False
    redispatch_after = settings.OPENCHARGEBACK_REDISPATCH_SECONDS
    notice = on_notice or (lambda message: None)
    while True:
        progress = selectors.dispatch_progress(statement_ids, delivery_ids)
        if on_progress:
            on_progress(progress.completed, progress.total, _progress_detail(progress))
        if progress.done:
            return
        now = time.monotonic()
        if progress.completed != last_done:
            last_done, last_change = progress.completed, now
        else:
            if not hinted and now - last_change > STALL_HINT_SECONDS:
                notice(
                    "no progress for 60 s: is a worker running? (openchargeback worker, or "
                    "celery -A chargeback worker)"
                )
                hinted = True
            if now - max(last_change, last_redispatch) > redispatch_after:
                again = tasks.redispatch_outstanding(statement_ids, delivery_ids)
                last_redispatch = now
                if again:
                    notice(
                        f"no progress for {redispatch_after} s: queued {again} unfinished task(s) "
                        "again (a worker may have been lost; tasks are idempotent)"
                    )
        if progress.sending:
            delivery_services.deliveries_mark_interrupted()
        if timeout and now - started > timeout:
            raise Refused(
                f"timed out after {timeout:.0f} s with {progress.completed} of {progress.total} tasks done; "
                "the workers carry on, check again with `send` or in the admin"
            )
        time.sleep(poll)


def run_collect(statement_ids: list[int], delivery_ids: list[int]) -> RunReport:
    """What a dispatch of these statements and deliveries has achieved so far."""
    report = RunReport(renders=len(statement_ids), emails=len(delivery_ids))
    statements = list(Statement.objects.filter(pk__in=statement_ids).order_by("sequence", "version"))
    report.rendered = sum(1 for s in statements if s.pdf)
    report.render_failed = [s for s in statements if not s.pdf and s.render_error]
    for delivery in Delivery.objects.filter(pk__in=delivery_ids).order_by("recipient"):
        if delivery.state == Delivery.State.SENT:
            report.sent.append(delivery)
        elif delivery.state == Delivery.State.FAILED:
            report.failed.append(delivery)
        else:
            report.unfinished.append(delivery)
    return report


@dataclass
class PdfAvailability:
    """Whether a statement's PDF can be served now, and if not, why."""

    statement: Statement
    ready: bool
    reason: str = ""


def statement_pdf_ensure(*, statement: Statement, may_render: bool) -> PdfAvailability:
    """Make sure a statement's PDF exists: render it (queued with workers, at once without) when
    the caller may write, else only say it is missing. Rendering a missing PDF is a write, so a
    role that only reads (a viewer, a PI in the portal) gets the reason instead."""
    if statement.pdf:
        return PdfAvailability(statement, True)
    if not may_render:
        return PdfAvailability(
            statement,
            False,
            f"Statement {statement.label} has no PDF yet. A reviewer or billing admin can render it "
            "(Statements → Render missing PDFs).",
        )
    run_and_wait([statement.pk], [], wait=False)
    statement.refresh_from_db()
    if statement.pdf:
        return PdfAvailability(statement, True)
    return PdfAvailability(
        statement,
        False,
        f"The PDF of statement {statement.label} is being rendered"
        + (f" (last attempt failed: {statement.render_error})" if statement.render_error else "")
        + "; try again in a moment.",
    )
