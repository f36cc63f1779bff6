"""Writes of rating, by sub-domain: `rules` (rates and subsidies) and `usage` (rating usage files
into imports, re-rating a period). Each function is one transaction."""

from .rules import (
    RATE_EDITABLE,
    SUBSIDY_FIELDS,
    rate_add,
    rate_delete,
    rate_update,
    subsidy_add,
    subsidy_update,
)
from .usage import RerateOutcome, UsageOutcome, usage_rate, usage_rerate

__all__ = [
    "RATE_EDITABLE",
    "SUBSIDY_FIELDS",
    "RerateOutcome",
    "UsageOutcome",
    "rate_add",
    "rate_delete",
    "rate_update",
    "subsidy_add",
    "subsidy_update",
    "usage_rate",
    "usage_rerate",
]
