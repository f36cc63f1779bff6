"""Who did something: the label every service records next to the acting user."""

from __future__ import annotations

import getpass
from typing import Any


def actor_label(actor: Any = None, actor_name: str = "") -> str:
    """Who did it: the user's name, an explicit label, or `cli:<os user>`."""
    if actor is not None and getattr(actor, "is_authenticated", False):
        return actor.get_username()
    if actor_name:
        return actor_name
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def actor_fields(actor: Any, actor_name: str) -> dict[str, Any]:
    """The `actor` (a signed-in user or None) and `actor_name` fields of a recorded action."""
    user = actor if actor is not None and getattr(actor, "is_authenticated", False) else None
    return {"actor": user, "actor_name": actor_label(actor, actor_name)}
