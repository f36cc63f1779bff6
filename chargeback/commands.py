"""The base of every reporting `openchargeback` command.

- `--format text|json` (on the command and on each of its subcommands); with `json` the
  command prints exactly one JSON document on stdout: money as
  `{"amount": "<exact decimal>", "cents": <int>}` in the installation's currency, counts
  as integers.
- Exit codes: 0 success; 1 refused (`chargeback.errors.Refused`: bad input or a business
  rule, nothing written), with the message on stderr and, with `--format json`,
  `{"error": ..., "errors": [...]}` on stdout; 2 usage (missing or invalid arguments).
- Called through `call_command`, a refusal raises `CommandRefused` (returncode 1) and a
  usage error `UsageError` (returncode 2), after the same output.

Commands stay thin: they parse arguments, call services/selectors and print.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from functools import cached_property
from typing import Any, NoReturn

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chargeback.errors import Refused
from chargeback.money import format_money, money_json

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
FORMATS = ("text", "json")


def _no_currency_source() -> str:
    raise RuntimeError(
        "no currency source: the billing app sets chargeback.commands.currency_source when ready"
    )


# The installation's currency code. The core does not know where it is kept: billing sets this
# when its app is ready (BillingConfig.ready).
currency_source: Callable[[], str] = _no_currency_source


class UsageError(CommandError):
    """The arguments do not make a valid request (exit code 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, returncode=EXIT_USAGE)


class CommandRefused(CommandError):
    """What `call_command` raises for a refusal, after reporting it like the console script does."""

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message, returncode=EXIT_REFUSED)
        self.errors = errors or []


class AlreadyReported(Refused):
    """A failure the command has reported itself, on stderr and in its JSON document (e.g. some
    files of an ingest were refused): exit code 1, nothing more printed."""


class _Exit(Exception):
    """Ends a console-script run with an exit code once everything is reported."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Parser(CommandParser):
    """Argument errors are usage errors: exit code 2 on the command line, `UsageError` from
    call_command (Django's parser raises a CommandError with returncode 1 there)."""

    def error(self, message: str) -> NoReturn:
        if self.called_from_command_line:
            argparse.ArgumentParser.error(self, message)
        raise UsageError(f"Error: {message}")


class ProgressBar:
    """A one-line bar on stderr, drawn only on a terminal. `megabytes`: counts are bytes, shown in MB."""

    def __init__(self, stream: Any, total: int, enabled: bool, megabytes: bool = False) -> None:
        self.stream = stream
        self.total = total
        self.enabled = enabled and total > 0 and hasattr(stream, "isatty") and stream.isatty()
        self.megabytes = megabytes
        self.done = 0
        self._last = ""

    def update(self, done: int, detail: str = "") -> None:
        self.done = min(done, self.total)
        if not self.enabled:
            return
        width = 30
        filled = int(width * self.done / self.total) if self.total else width
        counts = (
            f"{self.done / 1e6:,.0f}/{self.total / 1e6:,.0f} MB"
            if self.megabytes
            else f"{self.done}/{self.total}"
        )
        text = f"\r[{'#' * filled}{'.' * (width - filled)}] {counts} {detail}"
        if text != self._last:
            self.stream.write(text.ljust(78))
            self.stream.flush()
            self._last = text

    def advance(self, units: int, detail: str = "") -> None:
        self.update(self.done + units, detail)

    def finish(self) -> None:
        if self.enabled and self._last:
            self.stream.write("\n")
            self.stream.flush()


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                yield from _parsers(sub)


def refusal_errors(exc: Exception) -> list[dict[str, Any]]:
    """The row errors of an IngestError (line, column, value, message); empty for other refusals."""
    return [e.as_dict() if hasattr(e, "as_dict") else {"message": str(e)} for e in getattr(exc, "errors", [])]


def refusal_text(exc: Exception) -> str:
    """The message for people: IngestError's multi-line description, or the message."""
    describe = getattr(exc, "describe", None)
    return describe() if callable(describe) else str(exc)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class ReportingCommand(BaseCommand):
    """Base class of the reporting commands (see the module docstring)."""

    output_format: str = "text"
    # A command whose `--format` also names something else (export-journal: the journal layout, as
    # the original's `--format gl`): any value is accepted; text and json still choose the output.
    format_also_names: str = ""

    # --- parser -----------------------------------------------------------------------------

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        if self.format_also_names:
            parser.add_argument(
                "--format",
                default="text",
                metavar=f"text|json|{self.format_also_names.upper()}",
                help=f"Output: text (default) or one JSON document; any other value is the {self.format_also_names}.",
            )
        else:
            parser.add_argument(
                "--format",
                choices=FORMATS,
                default="text",
                help="Output: text (default) or one JSON document.",
            )
        for sub in _parsers(parser):
            sub.__class__ = _Parser
            if sub is not parser:
                # Also accepted after a subcommand (`periods show P --format json`).
                sub.add_argument("--format", choices=FORMATS, default=argparse.SUPPRESS, help="text or json")
                self._add_base_options_to_subcommand(sub)
        return parser

    def _add_base_options_to_subcommand(self, sub: argparse.ArgumentParser) -> None:
        """Django's own options, accepted after the subcommand as well (`review list -v 2 --traceback`)."""
        hidden: dict[str, Any] = {"default": argparse.SUPPRESS, "help": argparse.SUPPRESS}
        sub.add_argument("-v", "--verbosity", type=int, choices=[0, 1, 2, 3], **hidden)
        for flag in ("--traceback", "--no-color", "--force-color"):
            sub.add_argument(flag, action="store_true", **hidden)
        if self.requires_system_checks:
            sub.add_argument("--skip-checks", action="store_true", **hidden)

    def add_subcommands(self, parser: CommandParser, title: str = "action") -> Any:
        """Subparsers for `COMMAND ACTION ...`; an action is required."""
        return parser.add_subparsers(dest=title, required=True, metavar=title.upper())

    # --- running ----------------------------------------------------------------------------

    def run_from_argv(self, argv: list[str]) -> None:
        try:
            super().run_from_argv(argv)
        except _Exit as exc:
            sys.exit(exc.code)

    def execute(self, *args: Any, **options: Any) -> Any:
        chosen = options.get("format") or "text"
        self.output_format = chosen if chosen in FORMATS else "text"
        try:
            return super().execute(*args, **options)
        except UsageError as exc:
            self.stderr.write(f"error: {exc}")
            self._stop(EXIT_USAGE, exc)
        except AlreadyReported as exc:
            self._stop(EXIT_REFUSED, CommandRefused(str(exc), refusal_errors(exc)))
        except Refused as exc:
            if options.get("traceback"):
                raise
            self.stderr.write(f"error: {refusal_text(exc)}")
            if self.is_json:
                self.emit({"error": str(exc), "errors": refusal_errors(exc)})
            self._stop(EXIT_REFUSED, CommandRefused(str(exc), refusal_errors(exc)))

    def _stop(self, code: int, exc: CommandError) -> NoReturn:
        if getattr(self, "_called_from_command_line", False):
            raise _Exit(code)
        raise exc

    # --- output -----------------------------------------------------------------------------

    @property
    def is_json(self) -> bool:
        return self.output_format == "json"

    @cached_property
    def currency(self) -> str:
        return currency_source()

    def money(self, value: Decimal | None) -> dict[str, Any] | None:
        """Money for JSON: exact amount string and integer minor units."""
        return money_json(value, self.currency)

    def fmt(self, value: Decimal | None) -> str:
        """Money for text: '$1,234.50' (half-up to the minor unit)."""
        return format_money(value, self.currency)

    def emit(self, document: Any) -> None:
        """Print the one JSON document of this run."""
        self.stdout.write(json.dumps(document, indent=2, ensure_ascii=False, default=_json_default))

    def line(self, text: str = "") -> None:
        self.stdout.write(text)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> None:
        """A plain text table; columns whose index is in `right` are right-aligned."""
        cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
        for n, row in enumerate(cells):
            parts = [
                cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row)
            ]
            self.stdout.write("  ".join(parts).rstrip())
            if n == 0:
                self.stdout.write("  ".join("-" * w for w in widths))
