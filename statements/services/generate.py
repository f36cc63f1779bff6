"""Issuing statements from a period's billable charges: numbering, versions, supersession."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from billing import selectors as billing_selectors
from billing.models import BillingPeriod
from chargeback.actors import actor_fields
from chargeback.errors import Refused
from chargeback.money import ZERO

from .. import selectors
from ..drafts import HeldBack, StatementDraft
from ..models import Statement, StatementLine
from ._common import Status, _pi_email


@dataclass
class StatementResult:
    """One PI × project after (or, in a dry run, as it would be after) generating."""

    status: str  # new | revised | unchanged | withdrawn
    number: str
    version: int
    pi_email: str
    project_code: str
    fund_org: str
    list_total: Decimal
    discount_total: Decimal
    billed_total: Decimal
    held_back_count: int = 0
    held_back_amount: Decimal = ZERO
    statement_id: int | None = None
    replaces: str = ""

    @property
    def label(self) -> str:
        return f"{self.number} v{self.version}"


@dataclass
class GenerateOutcome:
    period: str
    currency: str
    dry_run: bool = False
    pi_email: str | None = None
    statements: list[StatementResult] = field(default_factory=list)  # current ones, by number
    withdrawn: list[StatementResult] = field(default_factory=list)
    held_back_count: int = 0
    held_back_billed: Decimal = ZERO
    held_back_elsewhere: list[HeldBack] = field(default_factory=list)
    rejected_count: int = 0
    rejected_billed: Decimal = ZERO
    unbillable_count: int = 0
    unbillable_billed: Decimal = ZERO
    to_render: list[int] = field(default_factory=list)
    # A dry run: each statement as it would be, with the draft it would be issued from (previews).
    drafts: list[tuple[StatementResult, StatementDraft]] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for s in self.statements if s.status == status)

    @property
    def billed_total(self) -> Decimal:
        return sum((s.billed_total for s in self.statements), ZERO)

    @property
    def list_total(self) -> Decimal:
        return sum((s.list_total for s in self.statements), ZERO)


def _result(
    status: str, totals: StatementDraft | Statement, number: str, version: int, **extra: Any
) -> StatementResult:
    """One statement of an outcome; `totals` is the draft it is issued from, or the statement as it stands."""
    return StatementResult(
        status=status,
        number=number,
        version=version,
        pi_email=totals.pi_email,
        project_code=totals.project_code,
        fund_org=totals.fund_org,
        list_total=totals.list_total,
        discount_total=totals.discount_total,
        billed_total=totals.billed_total,
        held_back_count=totals.held_back_count,
        held_back_amount=totals.held_back_amount,
        **extra,
    )


def _statement_result(status: str, statement: Statement) -> StatementResult:
    return _result(status, statement, statement.number, statement.version, statement_id=statement.pk)


def statement_number(period: str, sequence: int) -> str:
    return f"{period}-{sequence:04d}"


def statements_generate(
    *,
    period: str,
    pi_email: str | None = None,
    dry_run: bool = False,
    actor: Any = None,
    actor_name: str = "",
) -> GenerateOutcome:
    """Issue the statements of a period from its billable charges, idempotently.

    Unchanged statements keep their version; a changed one gets a new version and the old one is
    superseded (kept, with its PDF); a statement whose charges are all gone is withdrawn
    (superseded without successor). The period's state is left alone: statements may be issued on
    an open period, and a later import plus generate issues new versions of what changed. A
    finalized period is refused. With `dry_run` nothing is written and the outcome says what would
    happen. PDFs are not rendered here: `to_render` lists the statements that need one (tasks
    render them).
    """
    period_obj = billing_selectors.period_get(period)
    if period_obj.status == Status.FINALIZED:
        raise Refused(f"period {period_obj.period} is finalized: its statements cannot be regenerated")
    email = _pi_email(pi_email)
    currency = billing_selectors.currency_code()
    outcome = GenerateOutcome(period=period_obj.period, currency=currency, dry_run=dry_run, pi_email=email)
    with transaction.atomic():
        # One generate at a time per period: the period row is the lock.
        period_obj = BillingPeriod.objects.select_for_update().get(pk=period_obj.pk)
        if period_obj.status == Status.FINALIZED:
            raise Refused(f"period {period_obj.period} is finalized: its statements cannot be regenerated")
        changes = selectors.statement_changes(period_obj, pi_email=email)
        drafts = changes.drafts
        outcome.held_back_count, outcome.held_back_billed = drafts.held_back_count, drafts.held_back_billed
        outcome.held_back_elsewhere = drafts.held_back_elsewhere
        outcome.rejected_count, outcome.rejected_billed = drafts.rejected_count, drafts.rejected_billed
        outcome.unbillable_count, outcome.unbillable_billed = (
            drafts.unbillable_count,
            drafts.unbillable_billed,
        )
        if dry_run:
            _plan(outcome, changes, period_obj)
        else:
            _issue(outcome, changes, period_obj, actor_fields(actor, actor_name))
    outcome.statements.sort(key=lambda r: r.number)
    return outcome


def _next_sequence(period: BillingPeriod) -> int:
    return (Statement.objects.filter(period=period).aggregate(m=Max("sequence"))["m"] or 0) + 1


def _plan(outcome: GenerateOutcome, changes: selectors.StatementChanges, period: BillingPeriod) -> None:
    sequence = _next_sequence(period)
    for draft in changes.new:
        result = _result("new", draft, statement_number(period.period, sequence), 1)
        outcome.drafts.append((result, draft))
        sequence += 1
    for draft, old in changes.changed:
        result = _result("revised", draft, old.number, old.version + 1, replaces=old.label)
        outcome.drafts.append((result, draft))
    for draft, old in changes.unchanged:
        outcome.drafts.append((_statement_result("unchanged", old), draft))
    outcome.statements = [result for result, _draft in outcome.drafts]
    outcome.withdrawn = [_statement_result("withdrawn", s) for s in changes.withdrawn]


def _issue(
    outcome: GenerateOutcome,
    changes: selectors.StatementChanges,
    period: BillingPeriod,
    actor_fields: dict[str, Any],
) -> None:
    now = timezone.now()
    superseded_ids = [old.pk for _d, old in changes.changed] + [s.pk for s in changes.withdrawn]
    if superseded_ids:
        Statement.objects.filter(pk__in=[s.pk for s in changes.withdrawn]).update(
            note="withdrawn: no billable charges remain"
        )
        Statement.objects.filter(pk__in=superseded_ids).update(
            state=Statement.State.SUPERSEDED, superseded_at=now
        )
    sequence = _next_sequence(period)
    planned: list[tuple[str, StatementDraft, int, int, Statement | None]] = []
    for draft in changes.new:
        planned.append(("new", draft, sequence, 1, None))
        sequence += 1
    for draft, old in changes.changed:
        planned.append(("revised", draft, old.sequence, old.version + 1, old))

    statements = [
        Statement(
            period=period,
            pi_id=draft.pi_id,
            project_code=draft.project_code,
            project_id=draft.project_id,
            sequence=seq,
            number=statement_number(period.period, seq),
            version=version,
            state=Statement.State.ISSUED,
            pi_email=draft.pi_email,
            pi_name=draft.pi_name,
            pi_department=draft.pi_department,
            project_name=draft.project_name,
            fund_org=draft.fund_org,
            cost_center=draft.cost_center,
            reference_1=draft.reference_1,
            reference_2=draft.reference_2,
            currency=draft.currency,
            list_total=draft.list_total,
            discount_total=draft.discount_total,
            billed_total=draft.billed_total,
            charge_count=draft.charge_count,
            held_back_count=draft.held_back_count,
            held_back_amount=draft.held_back_amount,
            rejected_count=draft.rejected_count,
            details=draft.details,
            content_hash=draft.content_hash,
            supersedes=old,
            issued_at=now,
            **actor_fields,
        )
        for _status, draft, seq, version, old in planned
    ]
    created = Statement.objects.bulk_create(statements, batch_size=500)
    lines = []
    for statement, (_status, draft, _seq, _version, _old) in zip(created, planned, strict=True):
        for position, line in enumerate(draft.lines, start=1):
            lines.append(
                StatementLine(
                    statement=statement,
                    position=position,
                    source_id=line.source_id,
                    source_name=line.source_name,
                    service_name=line.service_name,
                    kind=line.kind,
                    charge_count=line.charge_count,
                    list_exact=line.list_exact,
                    billed_exact=line.billed_exact,
                    list_amount=line.list_amount,
                    discount_amount=line.discount_amount,
                    amount=line.amount,
                    rating=line.rating,
                )
            )
    StatementLine.objects.bulk_create(lines, batch_size=2000)
    _log_issued(created, superseded_ids, actor_fields)

    for issued, (status, draft, _seq, _version, previous) in zip(created, planned, strict=True):
        outcome.statements.append(
            _result(
                status,
                draft,
                issued.number,
                issued.version,
                statement_id=issued.pk,
                replaces=previous.label if previous else "",
            )
        )
    for _draft, old in changes.unchanged:
        outcome.statements.append(_statement_result("unchanged", old))
    outcome.withdrawn = [_statement_result("withdrawn", s) for s in changes.withdrawn]
    # New versions, and current ones whose PDF is missing (an earlier run was interrupted).
    unrendered = [old.pk for _d, old in changes.unchanged if not old.pdf]
    outcome.to_render = [s.pk for s in created] + unrendered


def _log_issued(created: list[Statement], superseded_ids: list[int], actor_fields: dict[str, Any]) -> None:
    """Audit entries for statements written in bulk (auditlog sees only single saves)."""
    content_type = ContentType.objects.get_for_model(Statement)
    actor = actor_fields.get("actor")
    entries = [
        LogEntry(
            content_type=content_type,
            object_pk=str(s.pk),
            object_id=s.pk,
            object_repr=str(s),
            action=LogEntry.Action.CREATE,
            changes={"state": [None, s.state], "billed_total": [None, str(s.billed_total)]},
            actor=actor,
            additional_data={"actor_name": actor_fields["actor_name"], "event": "issued"},
        )
        for s in created
    ] + [
        LogEntry(
            content_type=content_type,
            object_pk=str(pk),
            object_id=pk,
            object_repr=f"statement #{pk}",
            action=LogEntry.Action.UPDATE,
            changes={"state": ["issued/sent", Statement.State.SUPERSEDED]},
            actor=actor,
            additional_data={"actor_name": actor_fields["actor_name"], "event": "superseded"},
        )
        for pk in superseded_ids
    ]
    LogEntry.objects.bulk_create(entries, batch_size=1000)
