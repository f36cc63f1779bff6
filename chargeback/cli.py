"""The `openchargeback` console script: Django's management utility with our settings.

- `-c/--config PATH` (anywhere before the command's own arguments): the original's config.yaml
  (`.yaml`/`.yml`) or an env file. Without it, `./instance/config.yaml` is read when present, as the
  original does, else `./.env`.
- Before a command runs (chargeback/startup.py): a missing SQLite database is created, one line
  says where; an unmigrated PostgreSQL database gets one line saying to migrate; the database
  settings of a config.yaml are applied when the file is new or changed; what the file could not
  honour is named. Never a traceback for any of these.
- `openchargeback`, `help`, `--help`: this project's commands and the monthly workflow first,
  Django's own commands after them (chargeback/cli_help.py). `version`/`--version`: this package's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HELP_FORMS: tuple[list[str], ...] = ([], ["help"], ["--help"], ["-h"])


def _take_config_option(argv: list[str]) -> list[str]:
    """Remove -c/--config PATH from argv and export it for settings.py to read."""
    out, subcommand, i = [argv[0]], None, 1
    while i < len(argv):
        arg = argv[i]
        # `shell -c CODE` is Django's own option: after `shell`, leave -c alone.
        if arg in ("-c", "--config") and not (subcommand == "shell" and arg == "-c"):
            if i + 1 >= len(argv):
                sys.stderr.write("openchargeback: -c/--config needs a PATH\n")
                raise SystemExit(2)
            os.environ["OPENCHARGEBACK_CONFIG"] = os.path.abspath(argv[i + 1])
            i += 2
            continue
        if arg.startswith("--config="):
            os.environ["OPENCHARGEBACK_CONFIG"] = os.path.abspath(arg.split("=", 1)[1])
            i += 1
            continue
        if subcommand is None and not arg.startswith("-"):
            subcommand = arg
        out.append(arg)
        i += 1
    return out


def _default_config() -> None:
    """No -c: ./instance/config.yaml when present, as the original reads it."""
    from chargeback.config_file import DEFAULT_CONFIG

    if "OPENCHARGEBACK_CONFIG" not in os.environ and DEFAULT_CONFIG.is_file():
        os.environ["OPENCHARGEBACK_CONFIG"] = str(DEFAULT_CONFIG.resolve())


def _config_problem() -> str:
    """A config.yaml that cannot be used, in one line (before Django reads it and fails loudly)."""
    from chargeback.config_file import ConfigError, is_yaml, read_config

    path = os.environ.get("OPENCHARGEBACK_CONFIG", "")
    if path and is_yaml(path):
        try:
            read_config(path)
        except ConfigError as exc:
            return str(exc)
    elif path and not Path(path).is_file():
        return f"config file not found: {path}"
    return ""


def main(argv: list[str] | None = None) -> int:
    argv = _take_config_option(list(sys.argv if argv is None else argv))
    if argv[1:] in (["--version"], ["version"]):  # this package's version (Django would print its own)
        from chargeback import package_version

        sys.stdout.write(f"openchargeback version {package_version()}\n")
        return 0
    _default_config()
    problem = _config_problem()
    if problem:
        sys.stderr.write(f"openchargeback: error: {problem}\n")
        return 1
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chargeback.settings")
    import django

    django.setup()
    if argv[1:] in HELP_FORMS:
        from chargeback.cli_help import main_help

        sys.stdout.write(main_help(Path(argv[0]).name))
        return 0
    from chargeback.startup import before_command, explain_database_error

    subcommand = argv[1] if len(argv) > 1 else "help"
    code = before_command(subcommand, sys.stderr)
    if code:
        return code
    from django.core.management import execute_from_command_line
    from django.db import DatabaseError

    try:
        execute_from_command_line(argv)
    except DatabaseError as exc:
        message = explain_database_error(exc)
        if not message:
            raise
        sys.stderr.write(f"openchargeback: error: {message}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
