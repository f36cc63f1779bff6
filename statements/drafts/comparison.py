"""The last stage of the drafts, pure as the others: each draft against the statement version in
force for its PI × project — new, changed or unchanged — and the versions nothing calls for any
more (withdrawn). Statement versions are read through `IssuedVersion`, so hand-built records
serve as well as the model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from .records import StatementDraft


class IssuedVersion(Protocol):
    """What the comparison reads of a statement version in force."""

    @property
    def content_hash(self) -> str: ...

    @property
    def currency(self) -> str: ...

    @property
    def sequence(self) -> int: ...


V = TypeVar("V", bound=IssuedVersion)


@dataclass
class DraftComparison(Generic[V]):
    new: list[StatementDraft] = field(default_factory=list)
    changed: list[tuple[StatementDraft, V]] = field(default_factory=list)
    unchanged: list[tuple[StatementDraft, V]] = field(default_factory=list)
    withdrawn: list[V] = field(default_factory=list)  # in force, but nothing billable any more


def drafts_compare(
    drafts: Mapping[tuple[int, str], StatementDraft], current: Mapping[tuple[int, str], V]
) -> DraftComparison[V]:
    """Each draft against the version in force of its PI × project: new (none), unchanged (the
    same content hash and currency: regeneration keeps the version) or changed; versions whose
    PI × project has no draft any more are withdrawn, by number."""
    comparison: DraftComparison[V] = DraftComparison()
    rest = dict(current)
    for key, draft in drafts.items():
        existing = rest.pop(key, None)
        if existing is None:
            comparison.new.append(draft)
        elif existing.content_hash == draft.content_hash and existing.currency == draft.currency:
            comparison.unchanged.append((draft, existing))
        else:
            comparison.changed.append((draft, existing))
    comparison.withdrawn = sorted(rest.values(), key=lambda version: version.sequence)
    return comparison
