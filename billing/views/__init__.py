"""Admin pages of the billing app that are not plain model screens: the dashboard, the review
queue and its confirmation page, attribution correction, period transitions, flag-rule tests
and re-evaluation, and the upload page with its JSON endpoints.

Each view checks the user's role (accounts.roles), calls one service or selector, and turns
`Refused` into an error message. The ModelAdmins in billing/admin/ mount them (get_urls).

By sub-domain: `dashboard`, `review`, `periods`, `flag_rules`, `imports` (`_common`: the chosen
period, currency, safe redirects). The names are re-exported here."""

from ._common import (  # noqa: F401
    MAX_LISTED_IDS,
    _admin_context,
    _remember_period,
    _safe_next,
    logger,
    period_named,
    rankings_if_cached,
    selected_period,
)
from .dashboard import (  # noqa: F401
    SERIES_COLORS,
    _nice_ceiling,
    _short_money,
    dashboard_context,
    source_chart,
)
from .flag_rules import (  # noqa: F401
    flag_rule_test,
    period_reevaluate,
)
from .imports import (  # noqa: F401
    _refused_upload,
    _start_import,
    import_download,
    import_guess,
    import_status,
    import_status_data,
    import_upload,
    stored_file_response,
)
from .periods import (  # noqa: F401
    TRANSITIONS,
    period_page_context,
    period_transition,
)
from .review import (  # noqa: F401
    _parse_ids,
    charge_correct,
    charge_page_context,
    charges_decide,
    charges_from_changelist_query,
    review_queue,
)
