"""Reads of charge queries: the portal's (limited to what the user may see), the admin queue's."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from ..models import ChargeQuery


def queries_base() -> QuerySet[ChargeQuery]:
    return ChargeQuery.objects.select_related(
        "period", "pi", "source", "charge", "statement", "statement_line", "credit_charge"
    )


def queries_visible(visible: Q) -> QuerySet[ChargeQuery]:
    """The queries about rows the caller may see: `visible` is a Q over `pi_id` and
    `project_code` (the portal's scope). Newest first."""
    return queries_base().filter(visible).order_by("-created_at", "-id")


def query_visible(visible: Q, pk: int) -> ChargeQuery | None:
    return queries_visible(visible).filter(pk=pk).first()


def queries_open() -> QuerySet[ChargeQuery]:
    """The reviewers' queue: open queries, oldest first (first asked, first answered)."""
    return queries_base().filter(state=ChargeQuery.State.OPEN).order_by("created_at", "id")


def queries_open_count() -> int:
    return ChargeQuery.objects.filter(state=ChargeQuery.State.OPEN).count()


def open_query_for_charge(charge_id: int) -> ChargeQuery | None:
    return ChargeQuery.objects.filter(charge_id=charge_id, state=ChargeQuery.State.OPEN).first()


def open_query_for_line(line_id: int) -> ChargeQuery | None:
    return ChargeQuery.objects.filter(statement_line_id=line_id, state=ChargeQuery.State.OPEN).first()


def query_recipients(query: ChargeQuery) -> list[str]:
    """Who hears the answer: whoever asked, and the PI whose money it is (once each)."""
    out: list[str] = []
    for email in (query.raised_by_email, query.pi.email):
        email = (email or "").strip().lower()
        if email and email not in out:
            out.append(email)
    return out
