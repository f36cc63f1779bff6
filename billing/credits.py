"""Credits: a negative charge for one PI × project in a period, added by a reviewer (for example
to settle a PI's query). It bills like any charge, so the next statement version shows it on its
own Credit line and the journal nets it against the source's debits.

A credit is written through its own Import record with no file and no period of its own
(`Import.period` empty): re-importing or replacing the source's files of the period supersedes
imports *of the period*, so a credit is never removed by a later file. The ReviewLog keeps the
decision (action `credit`), which also refreshes the period's cached totals.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction
from django.utils import timezone

from chargeback.actors import actor_fields
from chargeback.errors import Refused
from chargeback.money import round_currency

from . import selectors
from .models import PI, BillingPeriod, Charge, Import, Project, ReviewLog, Source

CREDIT_CATEGORY = "Credit"


@dataclass
class CreditOutcome:
    charge: Charge
    amount: Decimal  # positive: what the PI is credited


def credit_amount_parse(value: Any) -> Decimal:
    """A credit amount from a form or the CLI: a positive number of at most the currency's cents."""
    try:
        amount = Decimal(str(value).strip().replace(",", ""))
    except (InvalidOperation, ValueError):
        raise Refused(f"{value!r} is not an amount") from None
    if not amount.is_finite() or amount <= 0:
        raise Refused("a credit must be a positive amount")
    currency = selectors.billing_settings_get().currency_code
    if round_currency(amount, currency) != amount:
        raise Refused(f"a credit is given to the cent ({amount} has more decimals)")
    return amount


@transaction.atomic
def charge_credit_add(
    *,
    period: str,
    source: Source,
    pi_email: str,
    project_id: str,
    amount: Decimal,
    description: str,
    reference: str,
    service_name: str = "",
    fund_org: str = "",
    note: str = "",
    actor: Any = None,
    actor_name: str = "",
) -> CreditOutcome:
    """Credit `amount` (positive) to a PI × project in `period`: one charge of category Credit
    billing −amount. Refused on a finalized period (nothing may change there) and for a PI or
    project that does not exist."""
    amount = credit_amount_parse(amount)
    period_obj = BillingPeriod.objects.select_for_update().get(pk=selectors.period_get(period).pk)
    if period_obj.is_finalized:
        raise Refused(
            f"period {period_obj.period} is finalized: a credit cannot be added to it any more "
            "(credit the PI in an open period instead)"
        )
    pi = PI.objects.filter(email=(pi_email or "").strip().lower()).first()
    if pi is None:
        raise Refused(f"no PI {pi_email!r}")
    project = Project.objects.filter(project_id=project_id).first() if project_id else None
    if project_id and project is None:
        raise Refused(f"no project {project_id!r}")
    reference = reference.strip()[:200]
    fields = actor_fields(actor, actor_name)
    record = Import.objects.create(
        source=source,
        period=None,
        original_name=f"credit {reference} ({period_obj.period})"[:255],
        sha256=hashlib.sha256(
            f"credit:{period_obj.period}:{reference}:{timezone.now().isoformat()}".encode()
        ).hexdigest(),
        status=Import.Status.COMPLETED,
        charges_created=1,
        list_total=-amount,
        billed_total=-amount,
        started_at=timezone.now(),
        finished_at=timezone.now(),
        **fields,
    )
    charge = Charge.objects.create(
        period=period_obj,
        source=source,
        import_run=record,
        pi=pi,
        pi_email=pi.email,
        project=project,
        project_code=project_id or "",
        fund_org=fund_org or (project.fund_org if project else ""),
        cost_center=project.cost_center if project else "",
        reference_1=project.reference_1 if project else "",
        reference_2=project.reference_2 if project else "",
        attribution_source="manual",
        resource_id=reference,
        resource_name=description.strip()[:500],
        service_name=service_name[:200],
        service_category="Credit",
        charge_category=CREDIT_CATEGORY,
        list_cost=-amount,
        contracted_cost=-amount,
        billed_cost=-amount,
        effective_cost=-amount,
        review_state=Charge.ReviewState.OK,
    )
    ReviewLog.objects.create(
        charge=charge,
        period=period_obj,
        action=ReviewLog.Action.CREDIT,
        from_state="",
        to_state=Charge.ReviewState.OK,
        billed_cost=-amount,
        note=note,
        details={"reference": reference, "pi_email": pi.email, "project_code": project_id or ""},
        **fields,
    )
    return CreditOutcome(charge=charge, amount=amount)
