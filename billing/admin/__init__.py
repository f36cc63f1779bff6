"""The finance reviewer's admin, by sub-domain: charges, review, flag rules, periods, imports,
settings, reference data.

Admin classes stay thin: every write goes through billing.services (so the CLI and the admin
obey the same rules), reads that need care at scale live in billing.selectors, and the pages
that are not plain model screens are in billing.views. Importing this package registers them all."""

from .base import (  # noqa: F401
    ConfigManagedMixin,
    CurrencyAdminMixin,
    ServiceRefusalMixin,
    _badge,
    _currency,
    _fieldset_names,
    currency,
    currency_scope,
    money,
    money_cell,
)
from .billing_settings import (  # noqa: F401
    BillingSettingsAdmin,
)
from .charge_filters import (  # noqa: F401
    INDEXED_CHARGE_FILTERS,
    FlagReasonFilter,
    InputFilter,
    PeriodFilter,
    PIFilter,
    ProjectFilter,
    ReviewStateFilter,
    ServiceFilter,
    SourceFilter,
    _cached_rankings,
    _chosen_period,
)
from .charges import (  # noqa: F401
    ChargeAdmin,
)
from .flag_rules import (  # noqa: F401
    FlagRuleAdmin,
)
from .imports import (  # noqa: F401
    ImportAdmin,
)
from .periods import (  # noqa: F401
    BillingPeriodAdmin,
)
from .reference import (  # noqa: F401
    AccountMappingAdmin,
    PIAdmin,
    ProjectAdmin,
    SourceAdmin,
)
from .review import (  # noqa: F401
    ReviewLogAdmin,
)
from .users import (  # noqa: F401
    PortalUserAdmin,
)
