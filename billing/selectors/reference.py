"""Reference data: sources (and guessing them from file names), PIs, projects, mappings."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import QuerySet

from chargeback.errors import Refused

from ..models import Import, Source
from .periods import _PERIOD_IN_NAME

# Words shown in capitals (or their usual spelling) in a source's display name: aws -> AWS.
SOURCE_NAME_WORDS = {
    "ai": "AI",
    "api": "API",
    "aws": "AWS",
    "gcp": "GCP",
    "gpu": "GPU",
    "hpc": "HPC",
    "ibm": "IBM",
    "it": "IT",
    "oci": "OCI",
    "openai": "OpenAI",
    "vm": "VM",
}


SOURCE_SLUG_REGEX = r"[a-z0-9][a-z0-9_-]*"


def source_slug(name: str) -> str:
    """The slug a source name stands for, case-insensitive: `AWS` is `aws`."""
    slug = (name or "").strip().lower()
    if not re.fullmatch(SOURCE_SLUG_REGEX, slug):
        raise Refused(f"invalid source name {slug!r}: use lower-case letters, digits, '-' and '_'")
    return slug


def source_display_name(slug: str) -> str:
    """A name for people: well-known words as they are written (aws -> AWS, openai -> OpenAI,
    it_storage -> IT Storage, azure-local -> Azure Local), other words title-cased."""
    words = [w for w in re.split(r"[-_\s]+", slug) if w]
    return " ".join(SOURCE_NAME_WORDS.get(w.lower(), w.capitalize()) for w in words) or slug


def source_get(slug: str) -> Source:
    slug = (slug or "").strip().lower()
    try:
        return Source.objects.get(slug=slug)
    except Source.DoesNotExist:
        known = ", ".join(Source.objects.values_list("slug", flat=True)) or "none yet"
        raise Refused(f"unknown source {slug!r} (known: {known}); add it with `sources add`") from None


def source_for_filename(name: str, sources: Iterable[Source] | None = None) -> Source | None:
    """The source a file name names: the longest matching filename pattern (counted without its
    wildcards) or slug prefix wins, so `it_storage_2025-01.csv` is it_storage even when storage's
    pattern is `*storage*`. A slug prefix must end the name or be followed by '_', '.' or '-' and a
    digit: `azure-local_2025-01.csv` is never azure."""
    lower = name.lower()
    candidates = list(sources if sources is not None else Source.objects.filter(is_active=True))
    scored: list[tuple[int, Source]] = []
    for source in candidates:
        pattern = source.filename_pattern.lower()
        if pattern and fnmatch.fnmatch(lower, pattern):
            scored.append((len(re.sub(r"[*?\[\]]", "", pattern)), source))
        if re.match(rf"{re.escape(source.slug.lower())}(?:[_.]|-(?=[0-9])|$)", lower):
            scored.append((len(source.slug), source))
    return max(scored, key=lambda item: item[0])[1] if scored else None


def source_name_from_filename(name: str) -> str:
    """The source a file name suggests when no source matches it: the part before its period
    (`it_storage_2025-01.csv` -> it_storage); empty when the name has no period or no such part."""
    match = _PERIOD_IN_NAME.search(name)
    prefix = name[: match.start()].strip("_.- ").lower() if match else ""
    return prefix if re.fullmatch(SOURCE_SLUG_REGEX, prefix) else ""


@dataclass
class SourceLastImport:
    source: Source
    last: Import | None  # its most recent import that finished (completed, superseded or failed)


def sources_last_import() -> list[SourceLastImport]:
    """Every source with its last finished import, for `sources sync-status`."""
    finished = [Import.Status.COMPLETED, Import.Status.SUPERSEDED, Import.Status.FAILED]
    rows = []
    for source in Source.objects.order_by("slug"):
        last = (
            Import.objects.filter(source=source, status__in=finished)
            .select_related("period")
            .order_by("-id")
            .first()
        )
        rows.append(SourceLastImport(source=source, last=last))
    return rows


def sources_all() -> QuerySet[Source]:
    return Source.objects.order_by("slug")


def account_mappings_all() -> QuerySet:
    """Every sub-account mapping with its project, PI and source."""
    from ..models import AccountMapping

    return AccountMapping.objects.select_related("project__pi", "source").order_by(
        "sub_account_id", "source__slug"
    )
