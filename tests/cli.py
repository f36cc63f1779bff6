"""Running management commands in tests as the CLI would: exit code, stdout and stderr."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

from django.core.management import call_command
from django.core.management.base import CommandError


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run(*args: Any) -> Result:
    """Run a command; refusals and usage errors come back as their exit code, not as exceptions."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command(*[str(a) for a in args], stdout=out, stderr=err)
        code = 0
    except CommandError as exc:
        code = exc.returncode
        if not err.getvalue():  # argument errors are raised before the command can print
            err.write(str(exc))
    return Result(code, out.getvalue(), err.getvalue())
