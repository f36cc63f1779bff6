"""Every write of the billing domain. Each function is one transaction and enforces its rules,
so the CLI, the admin, tasks and tests get the same behaviour.

By sub-domain: `periods`, `reference` (sources, PIs, projects, mappings), `import_outcomes`,
`imports`, `import_runs`, `review`, `flag_rules`, `billing_settings`, `users` (PIs' portal accounts,
invitations, single sign-on). The names are re-exported
here so callers keep `from billing import services`."""

from ._common import (  # noqa: F401
    Status,
    logger,
)
from .billing_settings import (  # noqa: F401
    billing_settings_update,
)
from .flag_rules import (  # noqa: F401
    FILE_FLAG_REASONS,
    _chunks,
    _file_flags,
    _flags_for_charge,
    _reevaluate_one,
    _rule_values,
    flag_rule_save,
    flag_rules_set_active,
    period_reevaluate_flags,
)
from .import_outcomes import (  # noqa: F401
    AlreadyImported,
    ImportOutcome,
    ImportPart,
    _BackgroundStore,
    _DuplicateImport,
    _refuse_duplicate,
)
from .import_runs import (  # noqa: F401
    _delete_charges_of,
    _file_to_read,
    _import_part_of,
    _imports_replaced,
    _log_carried_decisions,
    _mark_failed,
    _period_for_import,
    _process_alive,
    _run_import,
    _runner,
    imports_fail_interrupted,
)
from .imports import (  # noqa: F401
    _DryRunRollback,
    _import_dry_run,
    import_create,
    import_execute,
    import_file,
)
from .periods import (  # noqa: F401
    _locked_period,
    _record_transition,
    _require_reviewable,
    period_close,
    period_ensure_open,
    period_finalize,
    period_finalize_problems,
    period_open,
    period_reopen,
)
from .reference import (  # noqa: F401
    PROJECT_EDITABLE,
    _pi_get_or_create,
    account_mapping_delete,
    account_mapping_set,
    pi_update,
    project_update,
    source_create,
    source_ensure,
    source_update,
)
from .review import (  # noqa: F401
    REVIEW_CHUNK,
    ReviewOutcome,
    _review,
    charge_correct_attribution,
    charges_approve,
    charges_reject,
    charges_review,
)
from .users import (  # noqa: F401
    InviteOutcome,
    UserOutcome,
    invitation_send,
    invitations_send,
    pi_users_ensure,
    preference_period_set,
    sso_user_for_email,
    user_add,
)
