"""Review: approve, reject, correct attribution; decisions on many charges at once."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypedDict, Unpack

from django.db import transaction

from chargeback.actors import actor_fields
from chargeback.errors import Refused

from .. import selectors
from ..ingest.flagging import FlagContext, summarize
from ..models import (
    BillingPeriod,
    Charge,
    ChargeFlag,
    Project,
    ReviewLog,
)
from ._common import Status, logger
from .flag_rules import _flags_for_charge
from .periods import _require_reviewable
from .reference import _pi_get_or_create


def _rankings_refresh_on_commit(period_ids: Iterable[int]) -> None:
    """Once the decision commits, recompute the cached rankings of the periods it changed, so the
    dashboard is fresh whether the admin, the CLI or a task decided. The cache is an optimisation:
    a failure to refresh it is logged, never raised into the decision that already committed."""
    ids = sorted(set(period_ids))
    if not ids:
        return

    def refresh() -> None:
        from .. import tasks  # the tasks wrap these services: imported when the commit runs

        for period in (
            BillingPeriod.objects.filter(pk__in=ids).order_by("period").values_list("period", flat=True)
        ):
            try:
                tasks.period_rankings_warm.delay(period)
            except Exception:
                logger.exception("could not refresh the rankings of %s", period)

    transaction.on_commit(refresh)


@dataclass
class ReviewOutcome:
    action: str
    count: int
    billed_total: Decimal
    batch: uuid.UUID | None
    skipped: int = 0


def _review(
    *,
    charge_ids: Iterable[int] | None,
    period: str | None,
    action: str,
    to_state: str,
    note: str,
    actor: Any,
    actor_name: str,
    only_flagged: bool,
) -> ReviewOutcome:
    charges = Charge.objects.all()
    if charge_ids is not None:
        ids = sorted({int(i) for i in charge_ids})
        if not ids:
            raise Refused("no charges given")
        found = set(Charge.objects.filter(id__in=ids).values_list("id", flat=True))
        missing = [i for i in ids if i not in found]
        if missing:
            raise Refused(f"no charge with id {', '.join(map(str, missing[:10]))}")
        charges = charges.filter(id__in=ids)
    if period:
        charges = charges.filter(period=selectors.period_get(period))
    if charge_ids is None and not period:
        raise Refused("give charge ids or a period")
    finalized = (
        BillingPeriod.objects.filter(charges__in=charges, status=Status.FINALIZED)
        .values_list("period", flat=True)
        .distinct()
    )
    if finalized:
        raise Refused(f"period {', '.join(finalized)} is finalized: no review changes")
    if only_flagged:
        charges = charges.filter(review_state=Charge.ReviewState.FLAGGED)
    rows = list(
        charges.exclude(review_state=to_state).values_list("id", "review_state", "billed_cost", "period_id")
    )
    skipped = (len(ids) - len(rows)) if charge_ids is not None else 0
    batch = uuid.uuid4()
    fields = actor_fields(actor, actor_name)
    ReviewLog.objects.bulk_create(
        [
            ReviewLog(
                charge_id=cid,
                period_id=pid,
                action=action,
                from_state=state,
                to_state=to_state,
                billed_cost=billed,
                note=note,
                batch=batch,
                **fields,
            )
            for cid, state, billed, pid in rows
        ],
        batch_size=5000,
    )
    changed_ids = [r[0] for r in rows]
    for start in range(0, len(changed_ids), 5000):
        Charge.objects.filter(id__in=changed_ids[start : start + 5000]).update(review_state=to_state)
    _rankings_refresh_on_commit(r[3] for r in rows)
    return ReviewOutcome(
        action=action,
        count=len(rows),
        billed_total=sum((r[2] for r in rows), Decimal(0)),
        batch=batch if rows else None,
        skipped=skipped,
    )


class _Decided(TypedDict, total=False):
    """Which charges a decision is on, and who takes it (see charges_review)."""

    charge_ids: Iterable[int] | None
    period: str | None
    actor: Any
    actor_name: str


def charges_approve(*, note: str = "", **decided: Unpack[_Decided]) -> ReviewOutcome:
    """Approve charges (by id, or every flagged charge of a period): they bill despite their flags."""
    return charges_review(action=ReviewLog.Action.APPROVE, note=note, **decided)


def charges_reject(*, note: str, **decided: Unpack[_Decided]) -> ReviewOutcome:
    """Reject charges: they never bill. A note saying why is required."""
    return charges_review(action=ReviewLog.Action.REJECT, note=note, **decided)


@transaction.atomic
def charge_correct_attribution(
    *,
    charge_id: int,
    pi_email: str,
    project_id: str,
    fund_org: str = "",
    note: str = "",
    actor: Any = None,
    actor_name: str = "",
) -> Charge:
    """Correct who pays for a charge; the rules run again on the corrected values."""
    charge = Charge.objects.select_for_update().select_related("period", "source").get(pk=charge_id)
    _require_reviewable(charge.period)
    pi = _pi_get_or_create(pi_email)
    project_id = (project_id or "").strip()
    project = (
        Project.objects.filter(project_id=project_id).select_related("pi").first() if project_id else None
    )
    if project_id and project is None:
        project = Project.objects.create(project_id=project_id, pi=pi, fund_org=fund_org.strip())
    before = {"pi_email": charge.pi_email, "project_code": charge.project_code, "fund_org": charge.fund_org}
    charge.pi, charge.pi_email = pi, pi.email
    charge.project, charge.project_code = project, project_id
    charge.fund_org = fund_org.strip() or (project.fund_org if project else "")
    charge.attribution_source = "manual"
    old_state = charge.review_state
    flags = _flags_for_charge(charge, FlagContext.load(selectors.billing_settings_get()))
    ChargeFlag.objects.filter(charge=charge).delete()
    ChargeFlag.objects.bulk_create(
        [ChargeFlag(charge=charge, reason=f.reason, rule_id=f.rule_id, detail=f.detail[:300]) for f in flags]
    )
    charge.flag_summary = summarize(flags)
    if old_state in (Charge.ReviewState.OK, Charge.ReviewState.FLAGGED):
        charge.review_state = Charge.ReviewState.FLAGGED if flags else Charge.ReviewState.OK
    charge.save()
    ReviewLog.objects.create(
        charge=charge,
        period=charge.period,
        action=ReviewLog.Action.CORRECT,
        from_state=old_state,
        to_state=charge.review_state,
        billed_cost=charge.billed_cost,
        note=note,
        details={
            "before": before,
            "after": {"pi_email": charge.pi_email, "project_code": project_id, "fund_org": charge.fund_org},
        },
        **actor_fields(actor, actor_name),
    )
    _rankings_refresh_on_commit([charge.period_id])
    return charge


REVIEW_CHUNK = 10_000


_DECISIONS: dict[str, str] = {
    ReviewLog.Action.APPROVE: Charge.ReviewState.APPROVED,
    ReviewLog.Action.REJECT: Charge.ReviewState.REJECTED,
}


@transaction.atomic
def charges_review(
    *,
    action: str,
    charge_ids: Iterable[int] | None = None,
    period: str | None = None,
    note: str = "",
    actor: Any = None,
    actor_name: str = "",
) -> ReviewOutcome:
    """The one review decision: approve or reject charges by id (any number, in chunks small
    enough for every database's parameter limit), or every flagged charge of a period. A
    rejection needs a note saying why. One transaction (the outcome names the first chunk's batch)."""
    if action not in _DECISIONS:
        raise Refused(f"unknown review action {action!r}: approve or reject")
    note = (note or "").strip()
    if action == ReviewLog.Action.REJECT and not note:
        raise Refused("a note is required to reject charges")

    def decide(chunk: list[int] | None) -> ReviewOutcome:
        return _review(
            charge_ids=chunk,
            period=period,
            action=action,
            to_state=_DECISIONS[action],
            note=note,
            actor=actor,
            actor_name=actor_name,
            only_flagged=chunk is None,
        )

    if charge_ids is None:
        return decide(None)
    ids = sorted({int(i) for i in charge_ids})
    if not ids:
        raise Refused("no charges given")
    total = ReviewOutcome(action=action, count=0, billed_total=Decimal(0), batch=None)
    for start in range(0, len(ids), REVIEW_CHUNK):
        outcome = decide(ids[start : start + REVIEW_CHUNK])
        total.count += outcome.count
        total.billed_total += outcome.billed_total
        total.skipped += outcome.skipped
        total.batch = total.batch or outcome.batch
    return total
