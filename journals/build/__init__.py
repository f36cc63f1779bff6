"""Building a period's journal, as pure functions of plain data (no database):

- `inputs`: what a journal is built from (settings, statements, lines, sources), read by
  `journals.selectors.inputs`;
- `stages`: statement lines → resolved lines (fund/org split, account code) → debits per
  (fund/org, source, account) → entries of 0.00 left out → one credit per source → descriptions;
- `checks`: every reason the journal cannot be exported;
- `pipeline`: `journal_from_inputs`, the stages and checks in order.
"""

from .checks import AccountColumn
from .inputs import (
    JournalInputs,
    LineInput,
    SettingsInput,
    SourceInput,
    StatementChangesInput,
    StatementInput,
)
from .pipeline import journal_from_inputs

__all__ = [
    "AccountColumn",
    "JournalInputs",
    "LineInput",
    "SettingsInput",
    "SourceInput",
    "StatementChangesInput",
    "StatementInput",
    "journal_from_inputs",
]
