"""Flag rules: saving a rule and re-evaluating a period's flags."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from django.db import IntegrityError, transaction

from chargeback.actors import actor_fields
from chargeback.errors import Refused
from chargeback.regex import regex_problem

from .. import selectors
from ..ingest.flagging import Flag, FlagContext, summarize
from ..models import (
    BillingPeriod,
    Charge,
    ChargeFlag,
    FlagReason,
    FlagRule,
    ReviewLog,
)
from .periods import _require_reviewable


def _rule_values(charge: Charge) -> dict[str, str]:
    return {name: getattr(charge, name) or "" for name, _ in FlagRule.FIELD_CHOICES}


# Flags about what the file said, not about who pays now: a row of another billing period stays
# flagged so whatever happens; tags that named a payer field twice or an invalid PI email stay
# until a reviewer corrects the charge's attribution.
FILE_FLAG_REASONS = (FlagReason.PERIOD_MISMATCH, FlagReason.AMBIGUOUS_TAGS, FlagReason.INVALID_PI_EMAIL)


def _file_flags(charge: Charge) -> list[Flag]:
    reasons = (FlagReason.PERIOD_MISMATCH,) if charge.attribution_source == "manual" else FILE_FLAG_REASONS
    summary = charge.flag_summary or ""
    if len(summary) < 500 and not any(str(reason) in summary for reason in reasons):
        return []  # the summary names every reason unless it was cut short
    return [Flag(f.reason, f.detail) for f in charge.flags.filter(reason__in=reasons).order_by("id")]


def _flags_for_charge(charge: Charge, context: FlagContext, rule_flags: list[Flag] | None = None) -> list:
    """Every flag of a charge; `rule_flags` when the rules already ran over many charges at once."""
    if rule_flags is None:
        rule_flags = context.rule_flags(_rule_values(charge), charge.source_id)
    from_file = _file_flags(charge)
    if charge.attribution_source == "ambiguous":
        # Its tags named a payer field twice: it stays so until a reviewer corrects it.
        if not any(f.reason == FlagReason.AMBIGUOUS_TAGS for f in from_file):
            from_file.append(Flag(FlagReason.AMBIGUOUS_TAGS, "ambiguous tags"))
        return from_file + rule_flags
    owner = charge.project.pi.email if charge.project_id and charge.project else None
    flags = context.attribution_flags(
        has_pi=charge.pi_id is not None,
        project_code=charge.project_code,
        fund_org=charge.fund_org,
        project_owner_email=owner,
        pi_email=charge.pi_email,
    )
    return from_file + flags + rule_flags


@transaction.atomic
def period_reevaluate_flags(*, period: str, actor: Any = None, actor_name: str = "") -> int:
    """Run the rules again over the period's undecided (ok/flagged) charges; returns how many changed state."""
    period_obj = selectors.period_get(period)
    _require_reviewable(period_obj)
    context = FlagContext.load(selectors.billing_settings_get())
    changed = 0
    undecided = Charge.objects.filter(
        period=period_obj, review_state__in=[Charge.ReviewState.OK, Charge.ReviewState.FLAGGED]
    ).select_related("project__pi")
    batch = uuid.uuid4()
    fields = actor_fields(actor, actor_name)
    for chunk in _chunks(undecided.iterator(chunk_size=5000), 5000):
        # The rules run over the whole chunk at once (RE2, column-wise).
        rule_values = [_rule_values(charge) for charge in chunk]
        rule_flags = context.rule_flags_many(
            {name: [v[name] for v in rule_values] for name, _ in FlagRule.FIELD_CHOICES},
            [charge.source_id for charge in chunk],
        )
        for charge, charge_rule_flags in zip(chunk, rule_flags, strict=True):
            flags = _flags_for_charge(charge, context, charge_rule_flags)
            changed += _reevaluate_one(charge, flags, period_obj, batch, fields)
    return changed


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _reevaluate_one(
    charge: Charge, flags: list, period_obj: BillingPeriod, batch: uuid.UUID, fields: dict[str, Any]
) -> int:
    """Record a charge's new flags; returns 1 when its state changed."""
    summary = summarize(flags)
    state = Charge.ReviewState.FLAGGED if flags else Charge.ReviewState.OK
    if summary == charge.flag_summary and state == charge.review_state:
        return 0
    ChargeFlag.objects.filter(charge=charge).delete()
    ChargeFlag.objects.bulk_create(
        [ChargeFlag(charge=charge, reason=f.reason, rule_id=f.rule_id, detail=f.detail[:300]) for f in flags]
    )
    Charge.objects.filter(pk=charge.pk).update(flag_summary=summary, review_state=state)
    if state == charge.review_state:
        return 0
    ReviewLog.objects.create(
        charge=charge,
        period=period_obj,
        action=ReviewLog.Action.REEVALUATE,
        from_state=charge.review_state,
        to_state=state,
        billed_cost=charge.billed_cost,
        note=summary,
        batch=batch,
        **fields,
    )
    return 1


@transaction.atomic
def flag_rule_save(
    *,
    name: str,
    pattern: str,
    fields: list[str],
    mode: str = FlagRule.Mode.FLAG_IF_MATCH,
    description: str = "",
    source: str | None = None,
    is_active: bool = True,
    rule_id: int | None = None,
) -> FlagRule:
    """Create or update a flag rule; an invalid regex or unknown field is refused with the reason."""
    problem = regex_problem(pattern)
    if problem:
        raise Refused(f"pattern {pattern!r}: {problem}")
    known = {name for name, _ in FlagRule.FIELD_CHOICES}
    unknown = [f for f in fields if f not in known]
    if not fields or unknown:
        raise Refused(
            f"unknown field(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(sorted(known))}"
        )
    values = {
        "name": name.strip(),
        "pattern": pattern,
        "fields": list(fields),
        "mode": mode,
        "description": description,
        "is_active": is_active,
        "source": selectors.source_get(source) if source else None,
    }
    try:
        # Saved through the model (never QuerySet.update) so the audit log records every edit.
        with transaction.atomic():
            if rule_id:
                rule = FlagRule.objects.select_for_update().get(pk=rule_id)
                for key, value in values.items():
                    setattr(rule, key, value)
                rule.save()
                return rule
            return FlagRule.objects.create(**values)
    except IntegrityError:
        raise Refused(f"a flag rule named {name!r} already exists") from None


@transaction.atomic
def flag_rules_set_active(*, rule_ids: Iterable[int], active: bool) -> int:
    """Enable or disable flag rules (the admin's bulk actions); each change is saved through the
    model, so the audit log records it. Returns how many rules changed."""
    changed = 0
    for rule in FlagRule.objects.select_for_update().filter(pk__in=list(rule_ids)).order_by("pk"):
        if rule.is_active != active:
            rule.is_active = active
            rule.save(update_fields=["is_active"])
            changed += 1
    return changed
