"""Collecting exports on a schedule: collection points (a local drop folder, an S3, Azure Blob or
Google Cloud Storage prefix) whose new files are imported by `openchargeback collect` and by beat.

- `models.py`: `CollectionPoint` (edited in the admin, history by auditlog) and `CollectedObject`
  (each file by key, with the version last seen and its outcome).
- `locations.py`: listing and fetching through fsspec, versions (ETag, generation, mtime:size) and
  the billing period of a key (`BILLING_PERIOD=YYYY-MM`, an Azure date range, or the file name).
- `services.py`: `collection_point_save`, `collection_run`; `selectors.py`: what the admin shows;
  `admin.py`; `tasks.py` (`billing.collect_exports`, scheduled in settings.CELERY_BEAT_SCHEDULE).
"""
