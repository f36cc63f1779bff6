"""Whether a custom journal format is usable: it must write a sample journal with awkward values
(commas, quotes, formulas, long text) into rows as wide as its header."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import JournalFormat

from .formats import BUILTIN_FORMATS, FormatSpec, LayoutError, _records, layout_for, spec_of
from .sample import sample_journal

# --- validating a custom format against a sample journal ------------------------------------


def validate_spec(spec: FormatSpec) -> dict[str, list[str]]:
    """Errors by field (header_template, row_template) of a custom format, found by compiling it
    and writing the sample journal; empty when the format is usable."""
    try:
        layout = layout_for(spec)
        _header, rows = _records(layout, sample_journal(), dt.datetime(2025, 2, 1, tzinfo=dt.UTC))
        for _row in rows:
            pass
    except LayoutError as exc:
        return {exc.field or "row_template": [str(exc)]}
    return {}


def format_problems(fmt: JournalFormat) -> dict[str, list[str]]:
    """What is wrong with a custom format, by field: a built-in name, no row template, or a sample
    journal it cannot write (see `validate_spec`). Empty when the format is usable."""
    errors: dict[str, list[str]] = {}
    if fmt.name in BUILTIN_FORMATS:
        errors["name"] = [f"{fmt.name} is a built-in format; choose another name"]
    if not (fmt.row_template or "").strip():
        errors["row_template"] = ["The row template cannot be empty."]
    if not errors:
        for field_name, messages in validate_spec(spec_of(fmt)).items():
            errors.setdefault(field_name, []).extend(messages)
    return errors
