"""CSV cells a spreadsheet cannot run: a cell that would start a formula is made text."""

from __future__ import annotations

import re

FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")
_PLAIN_NUMBER = re.compile(r"[-+]?[0-9]+(\.[0-9]+)?")


def neutralize(cell: str) -> str:
    """A cell a spreadsheet would read as a formula, made text ('=1+2' → "'=1+2"); numbers stay."""
    if cell and cell[0] in FORMULA_START and not _PLAIN_NUMBER.fullmatch(cell):
        return "'" + cell
    return cell
