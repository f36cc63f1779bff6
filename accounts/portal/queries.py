"""The portal's charge queries: a PI or delegate queries a charge or a statement line with a
reason, lists their queries and reads the answers. Everything goes through the user's portal
scope: a charge, line or query outside it is not found (404), as everywhere in the portal."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse

from billing.models import Charge
from chargeback.errors import Refused
from statements.models import Statement, StatementLine
from statements.queries import selectors as query_selectors
from statements.queries import services as query_services
from statements.queries.forms import QueryRaiseForm

from . import selectors
from .views import _base_context


def _raise_page(
    request: HttpRequest, scope: selectors.PortalScope, *, charge: Charge | None, line: StatementLine | None
) -> HttpResponse:
    existing = (
        query_selectors.open_query_for_charge(charge.pk)
        if charge is not None
        else query_selectors.open_query_for_line(line.pk)  # type: ignore[union-attr]
    )
    form = QueryRaiseForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            query = query_services.query_raise(
                visible=scope.q(),
                reason=form.cleaned_data["reason"],
                charge_id=charge.pk if charge is not None else None,
                line_id=line.pk if line is not None else None,
                actor=request.user,
            )
        except Refused as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(
                request, f"Query #{query.pk} sent. The billing team will answer here and by email."
            )
            return HttpResponseRedirect(reverse("portal:query", kwargs={"pk": query.pk}))
    context = _base_context(request, scope, form=form, charge=charge, line=line, existing=existing)
    return render(request, "portal/query_new.html", context)


@login_required
def query_charge(request: HttpRequest, charge_id: int) -> HttpResponse:
    scope = selectors.portal_scope(request.user)
    charge = (
        Charge.objects.filter(scope.q(), pi__isnull=False, pk=charge_id)
        .select_related("period", "source")
        .first()
        if not scope.is_empty
        else None
    )
    if charge is None:
        raise Http404("no such charge")
    return _raise_page(request, scope, charge=charge, line=None)


@login_required
def query_line(request: HttpRequest, line_id: int) -> HttpResponse:
    scope = selectors.portal_scope(request.user)
    line = (
        StatementLine.objects.filter(statement__in=Statement.objects.filter(scope.q()), pk=line_id)
        .select_related("statement", "statement__period")
        .first()
        if not scope.is_empty
        else None
    )
    if line is None:
        raise Http404("no such statement line")
    return _raise_page(request, scope, charge=None, line=line)


@login_required
def queries(request: HttpRequest) -> HttpResponse:
    scope = selectors.portal_scope(request.user)
    rows: list[Any] = list(query_selectors.queries_visible(scope.q())[:200]) if not scope.is_empty else []
    return render(request, "portal/queries.html", _base_context(request, scope, queries=rows))


@login_required
def query_detail(request: HttpRequest, pk: int) -> HttpResponse:
    scope = selectors.portal_scope(request.user)
    query = query_selectors.query_visible(scope.q(), pk) if not scope.is_empty else None
    if query is None:
        raise Http404("no such query")
    return render(request, "portal/query.html", _base_context(request, scope, query=query))
