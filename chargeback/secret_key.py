"""The secret key in production: never the public development key.

Sessions, CSRF tokens, password-reset and invitation links are signed with SECRET_KEY. The
embedded default (a laptop, `make demo`, tests) works with a development key that is published
in this repository; a server that runs with it lets anyone forge those signatures. With DEBUG
off, `serve`, `worker`, `beat` and the WSGI application refuse to start without a real key, and
`check --deploy` reports it (chargeback.E001).

A single-machine installation may keep its key in the data folder instead (`secret_key`, mode
0600): `demo` writes one, random and never published, so the README's quick start serves with
DEBUG off. SECRET_KEY in the environment or config.yaml wins over the file.
"""

from __future__ import annotations

import secrets
from pathlib import Path

DEVELOPMENT_SECRET_KEY = "openchargeback-insecure-development-key-change-me"  # noqa: S105 (public on purpose)
# Values that are not secret: the development key, and the placeholder of .env.example.
PUBLIC_KEYS = frozenset({DEVELOPMENT_SECRET_KEY, "", "change-me", "changeme"})
HOW_TO_SET = (
    "set SECRET_KEY in the environment or the .env file to a long random string, e.g. the output of "
    "python3 -c 'import secrets; print(secrets.token_urlsafe(50))' (or DEBUG=true on a development machine)"
)


KEY_FILE_NAME = "secret_key"


def secret_key_from_file(data_dir: Path) -> str | None:
    """The installation's key kept in its data folder, if there is one (read by settings)."""
    try:
        key = (data_dir / KEY_FILE_NAME).read_text().strip()
    except OSError:
        return None
    return key if key and key not in PUBLIC_KEYS else None


def secret_key_file_ensure(data_dir: Path) -> Path | None:
    """Write a random key to the data folder unless one is there; returns the file when it wrote one."""
    path = data_dir / KEY_FILE_NAME
    if secret_key_from_file(data_dir) is not None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(secrets.token_urlsafe(50) + "\n")
    return path


def secret_key_problem() -> str | None:
    """Why this process must not serve with its SECRET_KEY, or None."""
    from django.conf import settings

    if settings.DEBUG or settings.SECRET_KEY.strip() not in PUBLIC_KEYS:
        return None
    if settings.SECRET_KEY == DEVELOPMENT_SECRET_KEY:
        return f"SECRET_KEY is not set, and DEBUG is off: {HOW_TO_SET}"
    return f"SECRET_KEY is the placeholder {settings.SECRET_KEY!r}: {HOW_TO_SET}"


def refuse_without_secret_key() -> None:
    """For a command that starts a server or worker: stop with one line saying how to set it."""
    from django.core.management.base import CommandError

    problem = secret_key_problem()
    if problem:
        raise CommandError(problem)


def check_secret_key(app_configs: object = None, **kwargs: object) -> list:
    """System check (deploy): the key must not be public."""
    from django.core.checks import Error

    problem = secret_key_problem()
    return [Error(problem, id="chargeback.E001")] if problem else []
