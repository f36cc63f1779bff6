"""What a journal is built from, as plain frozen data: the selectors read it from the database
(`journals.selectors.inputs`), the stages (`journals.build.stages`, `.checks`) compute from it.
Nothing here touches the database."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from journals.entries import DEFAULT_DESCRIPTION, ChargeRow, StatementRef

# (PI id, project code) → the statement that bills them: how a charge finds its statement.
StatementKeys = Mapping[tuple[int, str], StatementRef]


def _no_charges(_statements: StatementKeys) -> Iterator[ChargeRow]:
    return iter(())


@dataclass(frozen=True)
class SettingsInput:
    """The journal settings at build time (`JournalSettings`, not yet checked)."""

    fund_org_regex: str = ""
    default_account: str = ""
    account_regex: str = ""
    debit_description: str = DEFAULT_DESCRIPTION
    credit_description: str = DEFAULT_DESCRIPTION
    reference_template: str = ""
    description_max_length: int = 35
    include_zero_entries: bool = False


@dataclass(frozen=True)
class StatementChangesInput:
    """How the issued statements differ from what they should say now (`statement_changes`)."""

    new: tuple[tuple[str, str], ...] = ()  # (PI email, project code) billed but without a statement
    stale: tuple[str, ...] = ()  # labels of statements changed or withdrawn since generating
    unbillable_count: int = 0  # billable charges with no PI
    unbillable_billed: Decimal = Decimal(0)


@dataclass(frozen=True)
class StatementInput:
    """One current statement (issued or sent, not superseded) and what its project says about
    account codes."""

    id: int
    number: str
    version: int
    pi_id: int
    pi_email: str
    pi_name: str
    project_id: str  # the project code
    project_name: str
    fund_org: str
    billed_total: Decimal
    currency: str
    cost_center: str = ""
    reference_1: str = ""
    reference_2: str = ""
    project_gl_account: str = ""  # the project's GL account (admin field)
    tag_account: str = ""  # the most common account tag on the project's billable charges

    @property
    def label(self) -> str:
        return f"{self.number} v{self.version}"

    def ref(self) -> StatementRef:
        return StatementRef(
            number=self.number,
            version=self.version,
            pi_email=self.pi_email,
            project_id=self.project_id,
            fund_org=self.fund_org,
            billed_total=self.billed_total,
        )


@dataclass(frozen=True)
class SourceInput:
    """A source of usage: where the journal credits it (fund/org, account)."""

    id: int
    slug: str
    display_name: str = ""
    fund_org: str = ""
    account: str = ""

    @property
    def name(self) -> str:
        return self.display_name or self.slug


@dataclass(frozen=True)
class LineInput:
    """One line of a current statement (PI × project × source × service, credits apart); its
    amount was rounded once by the statement."""

    statement_id: int
    source_id: int
    source_name: str
    service_name: str
    amount: Decimal
    kind: str = ""  # "" | Credit | Adjustment
    charge_count: int = 1
    list_amount: Decimal = Decimal(0)
    discount_amount: Decimal = Decimal(0)


@dataclass(frozen=True)
class JournalInputs:
    """Everything the journal of a period is built from. Statements in the order the database
    lists them, lines by statement and position: the order of the debits' statement lists."""

    period: str
    status: str
    currency: str
    settings: SettingsInput
    changes: StatementChangesInput = StatementChangesInput()
    statements: tuple[StatementInput, ...] = ()
    lines: tuple[LineInput, ...] = ()
    sources: Mapping[int, SourceInput] = field(default_factory=dict)
    # The billed charges of the statements, read when a layout asks for them (the detail level).
    charges: Callable[[StatementKeys], Iterator[ChargeRow]] = _no_charges
