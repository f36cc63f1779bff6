"""A period's journal from its inputs, stage by stage (`journals.build.stages`), with every reason
it cannot be exported (`journals.build.checks`). Pure: the selectors read the inputs."""

from __future__ import annotations

from chargeback.money import ZERO
from journals.entries import Journal

from .checks import (
    AccountColumn,
    account_problems,
    balance_problems,
    check_settings,
    fund_org_problems,
    statement_change_problems,
    statement_set_problems,
    statement_total_problems,
)
from .inputs import JournalInputs
from .stages import (
    credit_entries,
    debit_entries,
    describe_entries,
    drop_zero_entries,
    entry_order,
    journal_lines,
    resolve_lines,
)


def journal_from_inputs(inputs: JournalInputs, *, account_column: AccountColumn | None = None) -> Journal:
    """The journal of a period and its problems (empty when it can be exported); never raises for
    a business problem. `account_column`: the chosen layout writes an account code, so every
    entry (or line) it writes needs one; None checks what every layout needs.

    1. check the settings (regexes, templates) and the statements (missing, stale, totals);
    2. resolve each statement line's fund/org split and account code;
    3. one debit per (fund/org, source, account), leaving out 0.00 unless the settings include it;
    4. one credit per source, the sum of its debits;
    5. descriptions and references;
    6. check fund/orgs, account codes and the balance, and assemble the journal.
    """
    settings, currency, period = inputs.settings, inputs.currency, inputs.period
    change_problems = statement_change_problems(inputs.changes, currency)
    checked = check_settings(settings)
    problems = [*change_problems, *checked.problems]
    problems += statement_set_problems(
        inputs.statements, currency, period, other_statement_problems=bool(change_problems)
    )

    resolved = resolve_lines(
        inputs.statements, inputs.lines, inputs.sources, checked.splitter, settings.default_account
    )
    lines = journal_lines(resolved, period)
    problems += statement_total_problems(inputs.statements, inputs.lines, currency)

    include_zero = settings.include_zero_entries
    debits = drop_zero_entries(debit_entries(resolved, period), include_zero)
    credits = credit_entries(
        debits, inputs.sources.values(), checked.splitter, settings.default_account, period, include_zero
    )
    problems += fund_org_problems(debits, credits.entries, checked.splitter, currency)
    entries = entry_order(debits) + entry_order(credits.entries)
    if checked.templates_ok:
        entries = describe_entries(entries, settings)
    problems += account_problems(entries, lines, checked.account_regex, account_column)

    journal = Journal(
        period=period,
        currency=currency,
        status=inputs.status,
        statements=[s.ref() for s in inputs.statements],
        lines=lines,
        entries=entries,
    )
    line_total = sum((line.amount for line in inputs.lines), ZERO)
    problems += balance_problems(
        journal.debit_total, journal.credit_total, line_total, credits.uncredited, currency
    )
    journal.problems = problems
    keys = {
        (s.pi_id, s.project_id): ref for s, ref in zip(inputs.statements, journal.statements, strict=True)
    }
    charges = inputs.charges
    journal.charges = lambda: charges(keys)
    return journal
