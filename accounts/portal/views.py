"""The PI portal (/portal/): sign-in, statements, charges, spend chart, delegates.

Views stay thin: every query goes through the user's `PortalScope` (accounts.selectors), and an
object outside it is answered with 404. Writes and audit records are services.
"""

from __future__ import annotations

import calendar
import csv
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login as auth_login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.urls import reverse, reverse_lazy
from django.views.decorators.http import require_POST

from accounts import services as account_services
from accounts.tokens import account_link_tokens
from billing.models import BillingPeriod
from billing.rating.selectors import how_calculated
from billing.selectors import billing_settings_get
from chargeback.downloads import attachment_header, download_name
from chargeback.errors import Refused
from chargeback.money import ZERO
from statements.models import Statement
from statements.services.dispatch import statement_pdf_ensure

from . import selectors, services
from .forms import ChargeFilterForm, DelegationForm, EmailAuthenticationForm, InvitationPasswordForm

CHARGES_PER_PAGE = 100


def _base_context(request: HttpRequest, scope: selectors.PortalScope, **extra: Any) -> dict[str, Any]:
    org = billing_settings_get()
    return {
        "organization": org.organization_name,
        "contact_email": org.contact_email,
        "currency": org.currency_code,
        "scope": scope,
        "is_pi": scope.own_pi is not None,
        **extra,
    }


# --- sign-in --------------------------------------------------------------------------------


class LoginView(auth_views.LoginView):
    template_name = "registration/login.html"
    authentication_form = EmailAuthenticationForm
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(
            organization=billing_settings_get().organization_name,
            sso_enabled=settings.OIDC_ENABLED,
            sso_name=settings.OIDC_PROVIDER_NAME,
        )
        return context


class LogoutView(auth_views.LogoutView):
    next_page = "portal:login"


class PasswordResetView(auth_views.PasswordResetView):
    template_name = "registration/password_reset_form.html"
    email_template_name = "portal/email/password_reset.txt"
    subject_template_name = "portal/email/password_reset_subject.txt"
    success_url = reverse_lazy("portal:password_reset_done")
    token_generator = account_link_tokens

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {
            **super().get_context_data(**kwargs),
            "organization": billing_settings_get().organization_name,
        }

    @property
    def extra_email_context(self) -> dict[str, Any]:  # type: ignore[override]
        return {"organization": billing_settings_get().organization_name}


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    template_name = "registration/password_reset_done.html"


class SetPasswordView(auth_views.PasswordResetConfirmView):
    """The link of an invitation or of a password reset: choose a password, then be signed in.
    The link dies when the account is disabled (accounts.tokens); accepting never enables one."""

    template_name = "registration/set_password.html"
    form_class = InvitationPasswordForm
    token_generator = account_link_tokens
    success_url = reverse_lazy("portal:home")

    def form_valid(self, form: Any) -> HttpResponse:
        try:
            user = account_services.invitation_accept(
                user=form.user, password=form.cleaned_data["new_password1"]
            )
        except Refused as exc:
            form.add_error(None, str(exc))
            return self.form_invalid(form)
        del self.request.session[auth_views.INTERNAL_RESET_SESSION_TOKEN]
        auth_login(self.request, user, backend=settings.AUTHENTICATION_BACKENDS[0])
        messages.success(self.request, "Your password is set. Welcome!")
        return HttpResponseRedirect(str(self.success_url))


# --- statements -----------------------------------------------------------------------------


def month_label(period: str) -> str:
    """'2025-11' → 'Nov 2025': a month a reader recognises at a glance."""
    year, month = (int(part) for part in period.split("-"))
    return f"{calendar.month_abbr[month]} {year}"


def _chart(points: list[selectors.SpendPoint]) -> dict[str, Any] | None:
    """Geometry of the spend chart (an inline SVG, no script): per period a bar for the list
    price and, in front of it, one for the amount billed."""
    if not points or not any(p.list_total or p.billed_total for p in points):
        return None
    width, height, top, bottom, left = 720, 220, 16, 36, 8
    plot = height - top - bottom
    peak = max(max(p.list_total, p.billed_total) for p in points) or Decimal(1)
    slot = (width - left * 2) / len(points)
    bars = []
    for i, point in enumerate(points):
        list_h = float(max(point.list_total, ZERO) / peak) * plot
        billed_h = float(max(point.billed_total, ZERO) / peak) * plot
        x = left + i * slot
        bars.append(
            {
                "point": point,
                "x": round(x + slot * 0.15, 1),
                "w": round(slot * 0.7, 1),
                "bx": round(x + slot * 0.3, 1),
                "bw": round(slot * 0.4, 1),
                "list_y": round(top + plot - list_h, 1),
                "list_h": round(list_h, 1),
                "billed_y": round(top + plot - billed_h, 1),
                "billed_h": round(billed_h, 1),
                "label_x": round(x + slot / 2, 1),
                "label": month_label(point.period),
            }
        )
    return {
        "width": width,
        "height": height,
        "baseline": top + plot,
        "label_y": top + plot + 20,
        "bars": bars,
        "peak": peak,
        "left": left,
        "right": width - left,
    }


@login_required
def home(request: HttpRequest) -> HttpResponse:
    scope = selectors.portal_scope(request.user)
    periods = selectors.portal_periods(scope)
    context = _base_context(
        request,
        scope,
        periods=periods,
        chart=_chart(selectors.portal_spend(scope)),
    )
    return render(request, "portal/home.html", context)


@login_required
def period_detail(request: HttpRequest, period: str) -> HttpResponse:
    scope = selectors.portal_scope(request.user)
    view = selectors.portal_period(scope, period)
    if view is None:
        raise Http404("no such period")
    return render(request, "portal/period.html", _base_context(request, scope, view=view))


def _scoped_statement(request: HttpRequest, pk: int) -> tuple[selectors.PortalScope, Statement]:
    scope = selectors.portal_scope(request.user)
    statement = selectors.portal_statement(scope, pk)
    if statement is None:
        raise Http404("no such statement")
    return scope, statement


@login_required
def statement_detail(request: HttpRequest, pk: int) -> HttpResponse:
    scope, statement = _scoped_statement(request, pk)
    project_key = str(statement.project_id) if statement.project_id else selectors.NO_PROJECT
    access = selectors.portal_project(scope, project_key, statement.period)
    lines = list(statement.lines.all())
    context = _base_context(
        request,
        scope,
        statement=statement,
        lines=lines,
        how_calculated=how_calculated(line.rating for line in lines),
        versions=selectors.portal_statement_versions(scope, statement),
        charges_key=access.key if access else None,
        shared_by=scope.shared_by(statement.pi_id),
    )
    return render(request, "portal/statement.html", context)


@login_required
def statement_pdf(request: HttpRequest, pk: int) -> HttpResponseBase:
    scope, statement = _scoped_statement(request, pk)
    # Rendering is a write, not a PI's to trigger: say so, and tell the billing team.
    if not statement_pdf_ensure(statement=statement, may_render=False).ready:
        services.statement_pdf_missing(statement=statement, user=request.user)
        context = _base_context(request, scope, statement=statement)
        return render(request, "portal/pdf_unavailable.html", context, status=404)
    services.statement_pdf_downloaded(statement=statement, user=request.user)
    return FileResponse(
        statement.pdf.open("rb"),
        as_attachment=request.GET.get("inline") is None,
        filename=download_name(statement.pdf_filename, "statement.pdf"),
        content_type="application/pdf",
    )


# --- charges --------------------------------------------------------------------------------


def _project_access(
    request: HttpRequest, period: str, project: str
) -> tuple[selectors.PortalScope, BillingPeriod, selectors.ProjectAccess]:
    scope = selectors.portal_scope(request.user)
    period_obj = BillingPeriod.objects.filter(period=period).first()
    access = selectors.portal_project(scope, project, period_obj) if period_obj else None
    if period_obj is None or access is None:
        raise Http404("no such project")
    return scope, period_obj, access


@login_required
def charges(request: HttpRequest, period: str, project: str) -> HttpResponse:
    scope, period_obj, access = _project_access(request, period, project)
    form = ChargeFilterForm(request.GET or None, choices=selectors.charge_filter_choices(access, period_obj))
    filters = form.filters()
    qs = selectors.portal_charges(access, period_obj, filters)
    page = Paginator(qs, CHARGES_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = _base_context(
        request,
        scope,
        period=period_obj,
        access=access,
        form=form,
        filters=filters,
        totals=selectors.charge_totals(qs),
        page=page,
        query=query.urlencode(),
        csv_url=reverse("portal:charges_csv", kwargs={"period": period, "project": project})
        + (f"?{query.urlencode()}" if query else ""),
        statements=[
            s
            for s in selectors.portal_statements(scope).filter(
                period=period_obj, pi_id__in=access.pi_ids, project_code=access.project_code
            )
            if s.is_current
        ],
    )
    return render(request, "portal/charges.html", context)


CSV_COLUMNS = (
    "period",
    "pi_email",
    "project_id",
    "fund_org",
    "source",
    "service",
    "service_category",
    "charge_category",
    "resource_id",
    "resource_name",
    "region",
    "sku",
    "sub_account_id",
    "quantity",
    "unit",
    "list_cost",
    "billed_cost",
    "discount",
    "review_state",
    "charge_period_start",
    "charge_period_end",
)


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv_rows(qs: Any, period: str) -> Iterator[str]:
    from chargeback.csv_safety import neutralize

    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_COLUMNS)
    for c in qs.iterator(chunk_size=2000):
        text = [
            c.pi_email,
            c.project_code,
            c.fund_org,
            c.source.slug,
            c.service_name,
            c.service_category,
            c.charge_category,
            c.resource_id,
            c.resource_name,
            c.region,
            c.sku_id,
            c.sub_account_id,
        ]
        yield writer.writerow(
            [
                period,
                *(neutralize(v or "") for v in text),
                "" if c.quantity is None else format(c.quantity, "f"),
                neutralize(c.unit or ""),
                format(c.list_cost, "f"),
                format(c.billed_cost, "f"),
                format(c.list_cost - c.billed_cost, "f"),
                c.review_state,
                c.charge_period_start.isoformat() if c.charge_period_start else "",
                c.charge_period_end.isoformat() if c.charge_period_end else "",
            ]
        )


@login_required
def charges_csv(request: HttpRequest, period: str, project: str) -> StreamingHttpResponse:
    scope, period_obj, access = _project_access(request, period, project)
    form = ChargeFilterForm(request.GET or None, choices=selectors.charge_filter_choices(access, period_obj))
    qs = selectors.portal_charges(access, period_obj, form.filters())
    services.charges_csv_downloaded(
        user=request.user,
        period=period,
        project_code=access.project_code,
        pi_emails=sorted(
            {
                pi.email
                for pi in (scope.own_pi, *scope.delegating_pis.values())
                if pi is not None and pi.pk in access.pi_ids
            }
        ),
        rows=qs.count(),
    )
    response = StreamingHttpResponse(_csv_rows(qs, period), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = attachment_header(
        f"charges-{period}-{access.project_code or 'no-project'}.csv", "charges.csv"
    )
    return response


# --- delegates ------------------------------------------------------------------------------


def _own_pi(request: HttpRequest) -> Any:
    scope = selectors.portal_scope(request.user)
    if scope.own_pi is None:
        raise Http404("only PIs have delegates")
    return scope


@login_required
def delegates(request: HttpRequest) -> HttpResponse:
    scope = _own_pi(request)
    pi = scope.own_pi
    projects = [(p.pk, p.project_id + (f" — {p.name}" if p.name else "")) for p in selectors.pi_projects(pi)]
    form = DelegationForm(request.POST or None, projects=projects)
    if request.method == "POST" and form.is_valid():
        try:
            made = services.delegation_grant(
                pi=pi, email=form.cleaned_data["email"], project_ids=form.project_ids(), actor=request.user
            )
        except Refused as exc:
            form.add_error(None, str(exc))
        else:
            if made:
                messages.success(
                    request,
                    f"{form.cleaned_data['email']} may now see {len(made)} project{'s' if len(made) != 1 else ''}.",
                )
            else:
                messages.info(request, "Nothing changed: they could already see those projects.")
            return HttpResponseRedirect(reverse("portal:delegates"))
    context = _base_context(
        request, scope, form=form, rows=selectors.pi_delegates(pi), has_projects=bool(projects)
    )
    return render(request, "portal/delegates.html", context)


@login_required
@require_POST
def delegation_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    scope = _own_pi(request)
    try:
        delegation = services.delegation_revoke(pi=scope.own_pi, delegation_id=pk, actor=request.user)
    except Refused as exc:
        raise Http404(str(exc)) from exc
    messages.success(
        request, f"{delegation.delegate.email} can no longer see {delegation.project.project_id}."
    )
    return HttpResponseRedirect(reverse("portal:delegates"))


@login_required
@require_POST
def delegate_revoke_all(request: HttpRequest, user_id: int) -> HttpResponse:
    scope = _own_pi(request)
    try:
        count = services.delegations_revoke_user(pi=scope.own_pi, delegate_id=user_id, actor=request.user)
    except Refused as exc:
        raise Http404(str(exc)) from exc
    messages.success(request, f"Access to {count} project{'s' if count != 1 else ''} withdrawn.")
    return HttpResponseRedirect(reverse("portal:delegates"))
