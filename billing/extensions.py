"""What the layers above billing add to billing's own pages and workflows.

Billing never imports statements or journals: they register here when their app is ready
(`AppConfig.ready`), and billing calls whatever is registered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import BillingPeriod

# Why a closed period cannot be finalized yet, according to a higher layer (empty: no objection).
FinalizeCheck = Callable[["BillingPeriod"], list[str]]
# A section of the admin's period page: the template reads it under its name (None when not there).
PeriodPanel = Callable[["BillingPeriod"], Any]

# Why approving these charges will not be enough for a higher layer (journals: the export would
# refuse them): (charges queryset) -> [(reason, charge count)].
ApprovalCheck = Callable[[Any], list[tuple[str, int]]]

finalize_checks: list[FinalizeCheck] = []
approval_checks: list[ApprovalCheck] = []
period_panels: dict[str, PeriodPanel] = {}


def finalize_check_register(check: FinalizeCheck) -> None:
    if check not in finalize_checks:
        finalize_checks.append(check)


def period_panel_register(name: str, panel: PeriodPanel) -> None:
    period_panels[name] = panel


def finalize_objections(period: BillingPeriod) -> list[str]:
    return [problem for check in finalize_checks for problem in check(period)]


def approval_check_register(check: ApprovalCheck) -> None:
    if check not in approval_checks:
        approval_checks.append(check)


def approval_objections(charges: Any) -> list[tuple[str, int]]:
    return [problem for check in approval_checks for problem in check(charges)]
