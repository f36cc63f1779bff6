"""The `openchargeback` console script: Django's management utility with our settings.

`-c/--config PATH` (anywhere before the command's own arguments) reads settings from
that env file instead of ./.env.
"""

from __future__ import annotations

import os
import sys


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


def main(argv: list[str] | None = None) -> int:
    argv = _take_config_option(list(sys.argv if argv is None else argv))
    if argv[1:] in (["--version"], ["version"]):  # this package's version (Django would print its own)
        from chargeback import package_version

        sys.stdout.write(f"openchargeback version {package_version()}\n")
        return 0
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chargeback.settings")
    from django.core.management import execute_from_command_line

    if len(argv) < 2:
        argv = [*argv, "help"]
    execute_from_command_line(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
