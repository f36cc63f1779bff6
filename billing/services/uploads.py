"""Accepting an uploaded billing file: which files may be imported (types, size), which source
and period a file is for (chosen, or told from its name). The admin's upload page and any other
entry point ask here, so the rules live in one place; storing and running the import is
`import_create` and the `import_run` task."""

from __future__ import annotations

import os
from dataclasses import dataclass

from django.conf import settings

from chargeback.errors import Refused

from .. import selectors
from ..models import Source
from .reference import source_ensure

ACCEPTED_UPLOADS = (".csv", ".csv.gz")


def human_size(size: int) -> str:
    """`12.5 MB`: a byte count as people read it (the upload limit in messages)."""
    value, unit = float(size), "bytes"
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            break
        value /= 1024
    return f"{value:,.0f} {unit}" if unit == "bytes" else f"{value:,.1f} {unit}".replace(".0 ", " ")


def upload_name(name: str | None) -> str:
    """The file's own name (no client path), as the import records it."""
    return os.path.basename(name or "upload.csv")


def upload_too_large_message() -> str:
    return (
        f"The file is larger than the upload limit ({human_size(settings.OPENCHARGEBACK_UPLOAD_MAX_BYTES)})."
    )


@dataclass(frozen=True)
class AcceptedUpload:
    name: str
    source: Source
    period: str | None  # None: the import reads it from the file


def upload_guess(name: str, sources: list[Source] | None = None) -> dict[str, str]:
    """Source and period told from a file name (the upload page shows them before sending)."""
    source = selectors.source_for_filename(name, sources)
    return {
        "name": name,
        "source": source.slug if source else "",
        # No known source: the name's prefix, which the import creates on first sight.
        "new_source": "" if source else selectors.source_name_from_filename(name),
        "period": selectors.period_from_filename(name) or "",
    }


def upload_accept(*, name: str, size: int | None, source: str = "", period: str = "") -> AcceptedUpload:
    """Check an uploaded file before it is stored: a .csv or .csv.gz within the upload limit, for
    the chosen source (a new name creates it) or the one its name tells; the period chosen or
    told by the name, else left to the file. Refused with the reason people see otherwise."""
    name = upload_name(name)
    if not name.lower().endswith(ACCEPTED_UPLOADS):
        raise Refused("Only .csv and .csv.gz files can be imported.")
    if size and size > settings.OPENCHARGEBACK_UPLOAD_MAX_BYTES:
        raise Refused(upload_too_large_message())
    found: Source | None
    if source:
        found, _created = source_ensure(name=source)
    else:
        found = selectors.source_for_filename(name)
    if found is None:
        raise Refused("The source could not be told from the file name: choose one, or name a new one.")
    return AcceptedUpload(
        name=name, source=found, period=period or selectors.period_from_filename(name) or None
    )
