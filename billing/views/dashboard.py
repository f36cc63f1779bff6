"""The admin's dashboard: the chosen period's totals, rankings and the chart of billed by source."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.http import (
    HttpRequest,
)
from django.urls import reverse

from accounts import roles
from chargeback.money import ZERO, currency_symbol, format_money

from .. import selectors, spending
from ..models import BillingPeriod, Import
from ._common import _remember_period, selected_period


def dashboard_context(request: HttpRequest) -> dict[str, Any]:
    """Everything the admin index shows for the chosen period."""
    if not request.user.has_perm("billing.view_charge"):
        return {}
    period = selected_period(request)
    _remember_period(request, period)
    code = selectors.currency_code()
    context: dict[str, Any] = {
        "ocb_dashboard": True,
        "currency": code,
        "periods": list(BillingPeriod.objects.order_by("-period")[:60]),
        "period": period,
        "can_review": roles.can_review(request.user),
        "can_import": roles.can_import(request.user),
        "recent_imports": list(Import.objects.select_related("source", "period").order_by("-id")[:8]),
    }
    if period is None:
        return context
    totals = selectors.period_totals(period)
    rankings = selectors.period_rankings(period)
    history = selectors.billed_by_source_history(period)
    top_max = max((p.billed_total for p in rankings.top_projects), default=ZERO)
    context.update(
        totals=totals,
        rankings=rankings,
        source_chart=source_chart(history, code),
        source_changes=spending.source_changes(history),
        previous_period=history.periods[-2] if len(history.periods) > 1 else "",
        top_projects=[
            {
                "project": p,
                "percent": float(p.billed_total * 100 / top_max)
                if top_max > 0 and p.billed_total > 0
                else 0.0,
            }
            for p in rankings.top_projects
        ],
        charges_url=reverse("admin:billing_charge_changelist") + f"?period={period.period}",
        review_url=reverse("admin:billing_charge_review") + f"?period={period.period}",
        period_url=reverse("admin:billing_billingperiod_change", args=[period.pk]),
    )
    return context


SERIES_COLORS = 8


def _nice_ceiling(value: Decimal) -> Decimal:
    """The smallest 1, 2, 2.5 or 5 × 10^k that is at least `value` (for chart axes)."""
    if value <= 0:
        return Decimal(1)
    exponent = value.adjusted()
    for step in (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10)):
        candidate = step.scaleb(exponent)
        if candidate >= value:
            return candidate
    return Decimal(10).scaleb(exponent)


def _short_money(value: Decimal, currency: str) -> str:
    """Axis labels: "$0", "$750", "$1.25k", "$2M"."""
    symbol = currency_symbol(currency).strip()
    sign, value = ("-" if value < 0 else ""), abs(value)
    suffix = ""
    for limit, name in ((Decimal(10) ** 9, "B"), (Decimal(10) ** 6, "M"), (Decimal(10) ** 3, "k")):
        if value >= limit:
            value, suffix = value / limit, name
            break
    text = f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{sign}{symbol}{text}{suffix}"


def source_chart(history: selectors.SourceHistory, currency: str) -> dict[str, Any]:
    """Geometry of the stacked column chart (billed per source per period) as inline SVG."""
    width, height, left, right, top, bottom = 1160, 300, 70, 10, 14, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(1, len(history.periods))
    totals = [max(ZERO, history.total(i)) for i in range(len(history.periods))]
    ceiling = _nice_ceiling(max(totals, default=ZERO))
    slot = plot_w / n
    bar_w = min(48.0, slot * 0.64)
    colors = {slug: i % SERIES_COLORS for i, (slug, _) in enumerate(history.sources)}
    names = dict(history.sources)
    bars = []
    for i, label in enumerate(history.periods):
        x = left + slot * i + (slot - bar_w) / 2
        y = float(top + plot_h)
        segments = []
        for slug, series in history.billed.items():
            amount = series[i]
            if amount <= 0:
                continue
            h = float(amount / ceiling) * plot_h
            y -= h
            segments.append(
                {
                    "x": round(x, 1),
                    "y": round(y, 1),
                    "w": round(bar_w, 1),
                    "h": round(max(h, 0.5), 1),
                    "color": colors[slug],
                    "title": f"{label} · {names[slug]}: {format_money(amount, currency)}",
                }
            )
        year, month = label.split("-")
        bars.append(
            {
                "segments": segments,
                "label": dt.date(int(year), int(month), 1).strftime("%b"),
                "year": year if (i == 0 or month == "01") else "",
                "label_x": round(x + bar_w / 2, 1),
                "total": format_money(history.total(i), currency),
                "total_y": round(y - 4, 1),
            }
        )
    ticks = []
    for k in range(5):
        value = ceiling * k / 4
        ticks.append({"y": round(top + plot_h - plot_h * k / 4, 1), "label": _short_money(value, currency)})
    return {
        "width": width,
        "height": height,
        "left": left,
        "plot_right": width - right,
        "axis_y": top + plot_h,
        "label_y": top + plot_h + 16,
        "year_y": top + plot_h + 29,
        "bars": bars,
        "ticks": ticks,
        "legend": [{"name": name, "slug": slug, "color": colors[slug]} for slug, name in history.sources],
        "empty": not any(totals),
    }
