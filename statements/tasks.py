"""Celery tasks: thin wrappers around the services, safe to run twice.

`dispatch` renders PDFs in parallel and sends each PI's email once all of that PI's PDFs exist:
one chord per PI (render tasks as its header, the PI's send as its body). Without a broker the
tasks run eagerly in the caller, PI by PI. Progress is read from the database
(`selectors.dispatch_progress`), so restarts and several workers report into the same figures.

The database, not the broker, is the record of what is done: a waiting caller that sees no
progress for OPENCHARGEBACK_REDISPATCH_SECONDS queues the unfinished work again
(`redispatch_outstanding`). Every task survives redelivery (acks_late, reject on worker lost): a render of a statement that
already has its PDF does nothing, and a delivery is claimed before sending, so a repeated send
returns without emailing again. The send task renders any PDF still missing itself, so a chord
that fires early (a header task ran twice) or late never sends an incomplete email.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable

from celery import chord, shared_task
from celery.canvas import Signature
from django.conf import settings

from . import services
from .models import Delivery, Statement, StatementRun
from .selectors import statement_run_is_stale

logger = logging.getLogger(__name__)


def _render(statement_id: int) -> None:
    try:
        services.statement_render_pdf(statement_id=statement_id)
    except Statement.DoesNotExist:
        logger.warning("statement #%s no longer exists", statement_id)
    except Exception as exc:
        logger.exception("rendering statement #%s failed", statement_id)
        services.statement_record_render_error(
            statement_id=statement_id, error=f"{type(exc).__name__}: {exc}"
        )


@shared_task(name="statements.render_pdf", acks_late=True, reject_on_worker_lost=True, ignore_result=False)
def render_statement_pdf(statement_id: int) -> int:
    """Render one statement's PDF (nothing to do when it exists); a failure is recorded on the statement."""
    _render(statement_id)
    return statement_id


@shared_task(name="statements.render_pdfs", acks_late=True, reject_on_worker_lost=True, ignore_result=False)
def render_statement_pdfs(statement_ids: list[int]) -> list[int]:
    """Render a batch of statements' PDFs in one task: the broker's overhead is paid once and the
    batch's data read in a few queries (services.statements_render_pdfs). Each render is
    idempotent, so a redelivered batch only renders what is still missing; a failure is
    recorded on its statement and the rest of the batch is rendered."""
    services.statements_render_pdfs(statement_ids=statement_ids)
    return statement_ids


@shared_task(name="statements.run")
def statements_run(run_id: int) -> str:
    """Carry out an admin's issue / send run (services.runs): prepare it, dispatch its PDFs and
    emails, and return without waiting for them (statements.run_follow follows them)."""
    from .services.runs import statement_run_execute

    run = statement_run_execute(run_id=int(run_id))
    _follow_later(run)
    return str(run.state)


# How often a dispatched run's progress is recorded while its workers render and send.
RUN_FOLLOW_SECONDS = 3


@shared_task(name="statements.run_follow", ignore_result=True)
def statements_run_follow(run_id: int) -> str:
    """Record a dispatched run's progress and finish it once its PDFs and emails are done; again
    every few seconds until then, or until it is stale (no progress: its workers stopped)."""
    from .services.runs import statement_run_refresh

    run = statement_run_refresh(run_id=run_id)
    _follow_later(run)
    return str(run.state) if run else "missing"


def _follow_later(run: StatementRun | None) -> None:
    # Eagerly (no broker) the PDFs and emails were done before the run returned: nothing to follow.
    if run is None or run.is_finished or _eager() or statement_run_is_stale(run):
        return
    statements_run_follow.apply_async((run.pk,), countdown=RUN_FOLLOW_SECONDS)


@shared_task(name="statements.send_delivery", acks_late=True, reject_on_worker_lost=True, ignore_result=False)
def send_delivery(delivery_id: int) -> str:
    """Send one delivery at most once (see services.delivery_send)."""
    return services.delivery_send(delivery_id=delivery_id)


# Emails wait behind every queued render: on Redis, priority 0 is fetched first and 9 last. A
# period's PDFs are all rendered before its emails go out, so a worker stopped while rendering
# never leaves an email half sent.
RENDER_PRIORITY = 0
SEND_PRIORITY = 9
# Statements per render task: enough to amortise a task's overhead and its few queries (the
# batch's data is read at once), few enough to spread a period over every worker process.
RENDER_BATCH = 16


def _eager() -> bool:
    return bool(getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False))


def dispatch_signatures(
    statement_ids: Iterable[int], delivery_ids: Iterable[int]
) -> list[tuple[Signature, int]]:
    """One signature per PI: chord(render the PI's statements needing a PDF, in batches → send
    the PI's delivery), or a send alone; renders for PIs with nothing to send go in batches of
    RENDER_BATCH. Each comes with how many units of work (PDFs + emails) it covers."""
    render_ids = set(statement_ids)
    delivery_ids = list(delivery_ids)
    pi_of = dict(Statement.objects.filter(pk__in=render_ids).values_list("pk", "pi_id"))
    renders_by_pi: dict[int, list[int]] = defaultdict(list)
    for statement_id in sorted(render_ids):
        if statement_id in pi_of:
            renders_by_pi[pi_of[statement_id]].append(statement_id)

    signatures: list[tuple[Signature, int]] = []
    covered: set[int] = set()
    deliveries = Delivery.objects.filter(pk__in=delivery_ids).order_by("recipient", "pk")
    carried: dict[int, set[int]] = defaultdict(set)
    for delivery_id, statement_id in Delivery.statements.through.objects.filter(
        delivery_id__in=delivery_ids
    ).values_list("delivery_id", "statement_id"):
        carried[delivery_id].add(statement_id)
    for delivery in deliveries:
        needed = sorted(carried[delivery.pk] & render_ids - covered)
        covered.update(needed)
        send = send_delivery.si(delivery.pk).set(priority=SEND_PRIORITY)
        if needed:
            signatures.append((chord(_render_batches(needed), send), len(needed) + 1))
        else:
            signatures.append((send, 1))
    rest = [sid for ids in renders_by_pi.values() for sid in ids if sid not in covered]
    for batch in _render_batches(rest):
        signatures.append((batch, len(batch.args[0])))
    return signatures


def _render_batches(statement_ids: list[int]) -> list[Signature]:
    """Render tasks of up to RENDER_BATCH statements each (in the given order, so one PI's
    statements share a task)."""
    return [
        render_statement_pdfs.si(statement_ids[i : i + RENDER_BATCH]).set(priority=RENDER_PRIORITY)
        for i in range(0, len(statement_ids), RENDER_BATCH)
    ]


def dispatch(
    statement_ids: Iterable[int],
    delivery_ids: Iterable[int] = (),
    *,
    on_progress: Callable[[int], None] | None = None,
) -> bool:
    """Start rendering and sending. Returns True when everything already ran (eager mode:
    `on_progress(units)` after each PI), False when workers will do it (wait with
    selectors.dispatch_progress)."""
    signatures = dispatch_signatures(statement_ids, delivery_ids)
    if _eager():
        for signature, units in signatures:
            # apply(): in this process, without a producer (there is no broker to talk to).
            signature.apply()
            if on_progress:
                on_progress(units)
        return True
    for signature, _units in signatures:
        signature.apply_async()
    return False


def redispatch_outstanding(statement_ids: Iterable[int], delivery_ids: Iterable[int]) -> int:
    """Queue again whatever of a dispatch is unfinished: PDFs not rendered (and not failed) and
    deliveries still queued. Safe at any time, since every task is idempotent; it recovers
    from a lost message (Redis drops a message popped by a worker that dies before recording
    it as unacknowledged). Returns how many units were queued again."""
    renders = list(
        Statement.objects.filter(pk__in=list(statement_ids), pdf="", render_error="").values_list(
            "pk", flat=True
        )
    )
    sends = list(
        Delivery.objects.filter(pk__in=list(delivery_ids), state=Delivery.State.QUEUED).values_list(
            "pk", flat=True
        )
    )
    if renders or sends:
        dispatch(renders, sends)
    return len(renders) + len(sends)


# Charge queries' task, registered with the app's tasks for Celery's autodiscovery.
from .queries.tasks import query_notify  # noqa: E402, F401
