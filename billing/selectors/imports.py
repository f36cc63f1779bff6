"""Imports: those in force for a source and period, and the same file imported before."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from ..models import BillingPeriod, Import, Source


def current_imports(source: Source, period: BillingPeriod) -> QuerySet[Import]:
    return Import.objects.filter(source=source, period=period, status=Import.Status.COMPLETED)


def imports_of_same_file(record: Import) -> QuerySet[Import]:
    """The imports of one file: a file whose rows span several billing periods is one per period."""
    first = record.part_of_id or record.pk
    return Import.objects.filter(Q(pk=first) | Q(part_of_id=first)).select_related("period").order_by("id")


def import_completed_with_sha256(sha256: str) -> Import | None:
    """The completed import of exactly these bytes, if any (what a re-import would be refused for)."""
    return Import.objects.filter(sha256=sha256, status=Import.Status.COMPLETED).order_by("-id").first()
