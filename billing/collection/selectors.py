"""Reads of billing.collection: what the admin's imports page and the points list show."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Count

from .models import CollectedObject, CollectionPoint


@dataclass
class CollectionProblems:
    """Files whose latest version failed, and points whose location could not be listed."""

    failed_files: list[CollectedObject] = field(default_factory=list)
    failed_count: int = 0
    failing_points: list[CollectionPoint] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.failed_count or self.failing_points)


def collection_problems(*, limit: int = 10) -> CollectionProblems:
    failed = CollectedObject.objects.filter(status=CollectedObject.Status.FAILED)
    return CollectionProblems(
        failed_files=list(
            failed.select_related("point", "failed_import").order_by("-collected_at", "-id")[:limit]
        ),
        failed_count=failed.count(),
        failing_points=list(CollectionPoint.objects.filter(enabled=True).exclude(last_error="")),
    )


def point_file_counts(point: CollectionPoint) -> dict[str, int]:
    """How many files of the point are imported and failed."""
    counts = dict.fromkeys(CollectedObject.Status.values, 0)
    for row in (
        CollectedObject.objects.filter(point=point).values("status").annotate(n=Count("id")).order_by()
    ):
        counts[row["status"]] = row["n"]
    return counts
