"""The read side of the drafts: what the stages need of a period, gathered from the database
into the plain records of `drafts.records` (the stages themselves never touch it)."""

from __future__ import annotations

from billing.models import PI, BillingPeriod, Charge, Project, Source
from billing.rating import selectors as rating_selectors
from billing.selectors import BILLABLE_STATES, currency_code

from .records import ChargeRow, DraftInputs, PIRef, ProjectRef, ReviewStates, SourceRef
from .stages import charge_groups


def draft_inputs(period: BillingPeriod, *, pi_email: str | None = None) -> DraftInputs:
    """The period's charges (of one PI with `pi_email`) with the PIs, projects and sources they
    name and how the rating explains them. The charges are streamed in PI × project order, one
    group at a time, when the stages read `groups`: a million-charge period is never held in
    memory at once."""
    charges = Charge.objects.filter(period=period)
    if pi_email:
        charges = charges.filter(pi__email=pi_email.strip().lower())
    pis = {
        pk: PIRef(pk, email, name, department)
        for pk, email, name, department in PI.objects.filter(pk__in=charges.values("pi_id")).values_list(
            "pk", "email", "name", "department"
        )
    }
    projects = {
        row[1]: ProjectRef(*row)
        for row in Project.objects.filter(project_id__in=charges.values("project_code")).values_list(
            "pk", "project_id", "name", "fund_org", "cost_center", "reference_1", "reference_2"
        )
    }
    sources = {
        pk: SourceRef(pk, slug, display_name)
        for pk, slug, display_name in Source.objects.values_list("pk", "slug", "display_name")
    }
    rows = (
        charges.values_list(*ChargeRow._fields).order_by("pi_id", "project_code").iterator(chunk_size=10000)
    )
    return DraftInputs(
        currency=currency_code(),
        states=ReviewStates(
            billable=frozenset(BILLABLE_STATES),
            held_back=Charge.ReviewState.FLAGGED,
            rejected=Charge.ReviewState.REJECTED,
        ),
        pis=pis,
        projects=projects,
        sources=sources,
        groups=charge_groups(map(ChargeRow._make, rows)),
        explanations=rating_selectors.charge_explanations(period),
        line_rating=rating_selectors.LineExplanation,
    )
