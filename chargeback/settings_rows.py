"""The installation's settings rows (billing, journal): one row each, changed field by field."""

from __future__ import annotations

from typing import Any, TypeVar

from django.db import models

from .errors import Refused

Row = TypeVar("Row", bound=models.Model)


def settings_row_for_update(model: type[Row], pk: Any, changes: dict[str, Any], what: str) -> Row:
    """The settings row locked for the change (inside the caller's transaction); a change naming a
    field the row does not have, or one no one edits (id, updated_at), is refused before anything."""
    editable = {f.name for f in model._meta.concrete_fields} - {"id", "updated_at"}
    unknown = set(changes) - editable
    if unknown:
        raise Refused(f"unknown {what}(s): {', '.join(sorted(unknown))}")
    return model.objects.select_for_update().get(pk=pk)  # type: ignore[attr-defined]
