"""Reads and aggregates of the billing domain. Totals that reach people are exact Decimals.

By sub-domain: `periods`, `billing_settings`, `reference`, `totals`, `imports`, `charges`,
`review`, `flag_rules`, `dashboard`, `users`. The names are re-exported here so callers keep
`from billing import selectors`."""

from .billing_settings import (  # noqa: F401
    billing_settings_get,
    config_managed_notice,
    currency_code,
)
from .charges import (  # noqa: F401
    charges_in_period,
    charges_with_flag,
    period_charge_id_range,
)
from .dashboard import (  # noqa: F401
    RANKINGS_CACHE_SECONDS,
    PeriodRankings,
    RankedTotal,
    SourceHistory,
    billed_by_source_history,
    period_default,
    period_fingerprint,
    period_rankings,
    period_rankings_cached,
    period_totals,
)
from .flag_rules import (  # noqa: F401
    RulePreview,
    _preview_chunk,
    flag_rule_preview,
)
from .imports import (  # noqa: F401
    current_imports,
    import_completed_with_sha256,
    imports_of_same_file,
)
from .periods import (  # noqa: F401
    _PERIOD_IN_NAME,
    BILLABLE_STATES,
    exact_sum,
    period_from_filename,
    period_get,
    period_status,
    periods_overview,
    periods_with_totals,
    validate_period,
)
from .reference import (  # noqa: F401
    SOURCE_NAME_WORDS,
    SOURCE_SLUG_REGEX,
    SourceLastImport,
    account_mappings_all,
    source_display_name,
    source_for_filename,
    source_get,
    source_name_from_filename,
    source_slug,
    sources_all,
    sources_last_import,
)
from .review import (  # noqa: F401
    ApprovalRisk,
    ReasonGroup,
    SelectionSummary,
    charges_approval_risk,
    charges_selection_summary,
    flagged_charges,
    review_queue_groups,
)
from .totals import (  # noqa: F401
    PeriodSummary,
    PeriodTotals,
    ProjectTotals,
    SourceTotal,
    period_project_totals,
    period_summary,
    period_totals_of,
    periods_totals,
    pi_period_projects,
)
from .users import (  # noqa: F401
    UserRow,
    users_list,
)
