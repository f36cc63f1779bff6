"""`openchargeback --help`: this project's commands and the monthly workflow first, then Django's."""

from __future__ import annotations

import re
from collections import defaultdict

from django.core.management import get_commands, load_command_class

OWN_APPS = ("billing", "statements", "journals", "accounts", "chargeback")
# In the order of a month's work, then the rest of ours by name.
WORKFLOW = [
    ("ingest FILE -s SOURCE [-p YYYY-MM]", "import a FOCUS export (a new source is created on first sight)"),
    ("review list -p YYYY-MM", "the charges that need a person; review approve|reject"),
    ("generate -p YYYY-MM [--dry-run] [--send]", "issue the statements (PDFs), email them to the PIs"),
    ("export-journal -p YYYY-MM [-f gl]", "the GL journal, written to the journal folder"),
    ("periods close|finalize YYYY-MM", "no more imports; then immutable"),
]


def _summary(app: str, name: str, room: int) -> str:
    """The first sentence of a command's help, cut to `room` characters."""
    try:
        text = load_command_class(app, name).help or ""
    except Exception:  # a broken third-party command must not break the help
        return ""
    first = re.split(r"(?<=[a-z0-9)])\.\s+(?=[A-Z])", " ".join(text.split()))[0].rstrip(".")
    return first if len(first) <= room else first[: room - 1].rstrip() + "…"


def main_help(prog: str = "openchargeback") -> str:
    by_app: dict[str, list[str]] = defaultdict(list)
    for name, app in get_commands().items():
        by_app[app if isinstance(app, str) else app.name].append(name)
    ours = sorted((name, app) for app in OWN_APPS for name in by_app.pop(app, []))
    width = max(len(name) for name, _ in ours) + 2
    lines = [
        f"usage: {prog} COMMAND [options] [-c config.yaml]",
        "",
        "OpenChargeback: simple, transparent billing for research computing.",
        "",
        "The monthly workflow:",
        *(line for form, what in WORKFLOW for line in (f"  {prog} {form}", f"      {what}")),
        "",
        "Commands:",
        *(f"  {name:<{width}}{_summary(app, name, 98 - width)}" for name, app in ours),
        "",
        "Options of every command:",
        "  -c, --config PATH   the original's config.yaml, or an env file (default: ./instance/config.yaml",
        "                      when present, else ./.env)",
        "  --version           the version of OpenChargeback",
        f"  {prog} help COMMAND (or COMMAND --help) shows a command's options.",
        "",
        "Django's own commands (migrate, createsuperuser, runserver, ...):",
    ]
    for app in sorted(by_app, key=lambda a: a.rsplit(".", 1)[-1]):
        lines.append(f"  [{app.rsplit('.', 1)[-1]}] {', '.join(sorted(by_app[app]))}")
    return "\n".join(lines) + "\n"
