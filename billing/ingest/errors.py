"""Errors an import reports: a message for people, and the offending rows."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from chargeback.errors import Refused


@dataclass(frozen=True)
class RowError:
    line: int | None
    column: str
    value: str
    message: str

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "file"
        value = self.value if len(self.value) <= 80 else self.value[:77] + "..."
        col = f", column {self.column}" if self.column else ""
        val = f", value {value!r}" if self.value else ""
        return f"{where}{col}{val}: {self.message}"


class IngestError(Refused):
    """The file cannot be imported; nothing was written."""

    MAX_ROW_ERRORS = 50

    def __init__(self, message: str, errors: list[RowError] | None = None, total_errors: int | None = None):
        self.errors = (errors or [])[: self.MAX_ROW_ERRORS]
        self.total_errors = total_errors if total_errors is not None else len(errors or [])
        super().__init__(message)

    @property
    def message(self) -> str:
        return str(self.args[0])

    def describe(self) -> str:
        lines = [self.message]
        lines += [f"  {err}" for err in self.errors]
        if self.total_errors > len(self.errors):
            lines.append(f"  ... and {self.total_errors - len(self.errors)} more")
        return "\n".join(lines)
