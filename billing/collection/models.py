"""Collection points and what was collected from them (models of the billing app)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class CollectionPoint(models.Model):
    """A place where a provider delivers exports: a local drop folder, or a prefix in S3, Azure Blob
    Storage or Google Cloud Storage. `collect` imports the new files of every enabled point."""

    class Kind(models.TextChoices):
        LOCAL = "local", "Local folder"
        S3 = "s3", "Amazon S3 (or S3-compatible)"
        AZURE = "azure", "Azure Blob Storage"
        GCS = "gcs", "Google Cloud Storage"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.LOCAL)
    source = models.ForeignKey(
        "billing.Source",
        on_delete=models.PROTECT,
        related_name="collection_points",
        help_text="The source every file collected here is imported as.",
    )
    location = models.CharField(
        max_length=500,
        help_text="A folder (/srv/exports/aws), or s3://bucket/prefix, az://container/prefix, "
        "gs://bucket/prefix. Files are looked for in every folder below it.",
    )
    pattern = models.CharField(
        max_length=200,
        default="*.csv *.csv.gz *.parquet",
        help_text="File-name patterns (shell globs, separated by spaces); a file whose name matches any "
        "of them is collected.",
    )
    endpoint_url = models.CharField(
        "endpoint URL",
        max_length=300,
        blank=True,
        default="",
        help_text="S3 only: an S3-compatible server (MinIO, Ceph). Empty: AWS, or AWS_ENDPOINT_URL.",
    )
    enabled = models.BooleanField(default=True)
    note = models.CharField(max_length=200, blank=True, default="")
    # A run holds the point while it collects, so two runs never import the same file twice.
    running_since = models.DateTimeField(null=True, blank=True, editable=False)
    last_run_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.TextField(
        blank=True, default="", editable=False, help_text="Why the last run could not list the location."
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(verbose_name="changed by", max_length=150, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "billing"
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=["local", "s3", "azure", "gcs"]), name="collection_point_kind"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def patterns(self) -> list[str]:
        return self.pattern.split()


class CollectedObject(models.Model):
    """One file of a collection point, remembered by its key and the version last seen (the ETag,
    a generation, or mtime:size for a local file): an unchanged version is never collected again."""

    class Status(models.TextChoices):
        IMPORTED = "imported", "Imported"
        FAILED = "failed", "Failed"

    point = models.ForeignKey(CollectionPoint, on_delete=models.CASCADE, related_name="files")
    key = models.CharField(max_length=1024, help_text="The file's path or object key.")
    version = models.CharField(max_length=200, help_text="ETag, generation, or mtime:size.")
    size_bytes = models.BigIntegerField(verbose_name="size (bytes)", default=0)
    period = models.CharField(max_length=7, blank=True, default="", help_text="From the path or the name.")
    status = models.CharField(max_length=10, choices=Status.choices, help_text="Of the version last seen.")
    import_run = models.ForeignKey(
        "billing.Import",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="collected_as",
        help_text="The import of this file in force (the latest version that imported).",
    )
    failed_import = models.ForeignKey(
        "billing.Import",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The failed import of the version last seen, with its errors by line.",
    )
    error = models.TextField(blank=True, default="", help_text="Why the version last seen failed.")
    first_seen_at = models.DateTimeField(auto_now_add=True)
    collected_at = models.DateTimeField(help_text="When this version was collected.")

    class Meta:
        app_label = "billing"
        verbose_name = "collected file"
        ordering = ["point", "key"]
        constraints = [
            models.UniqueConstraint(fields=["point", "key"], name="collected_object_unique_key"),
            models.CheckConstraint(
                condition=Q(status__in=["imported", "failed"]), name="collected_object_status"
            ),
        ]
        indexes = [models.Index(fields=["status", "collected_at"], name="collected_object_by_status")]

    def __str__(self) -> str:
        return self.key
