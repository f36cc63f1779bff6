"""Links to the spending pages: `{{ email|pi_spending_url }}`, `{{ project_id|project_spending_url }}`."""

from __future__ import annotations

from django import template

from billing import spending

register = template.Library()


@register.filter
def pi_spending_url(email: str) -> str:
    return spending.pi_spending_url(email) if email else ""


@register.filter
def project_spending_url(project_id: str) -> str:
    return spending.project_spending_url(project_id) if project_id else ""
