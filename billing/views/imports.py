"""Uploading FOCUS files, following an import's progress, downloading the stored file."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.files.uploadedfile import UploadedFile
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    JsonResponse,
)
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from accounts import roles
from chargeback.downloads import download_name
from chargeback.errors import Refused
from chargeback.money import format_money

from .. import selectors, services, tasks
from ..forms import (
    UploadForm,
)
from ..models import BillingPeriod, Import, Source
from ..services import uploads
from ._common import _admin_context, logger


def import_status_data(record: Import, currency: str) -> dict[str, Any]:
    """What the upload page shows of one import (and polls while it runs)."""
    done = record.status in (Import.Status.COMPLETED, Import.Status.FAILED, Import.Status.SUPERSEDED)
    started = record.started_at or record.created_at
    end = record.finished_at if done and record.finished_at else timezone.now()
    return {
        "id": record.pk,
        "name": record.original_name,
        "source": record.source.slug,
        # A file whose rows span several billing periods is one import per period.
        "period": ", ".join(str(i.period) for i in selectors.imports_of_same_file(record) if i.period_id)
        if done and record.period_id
        else (record.period.period if record.period_id and record.period else ""),
        "status": record.status,
        "status_label": record.get_status_display(),
        "done": done,
        "ok": record.status in (Import.Status.COMPLETED, Import.Status.SUPERSEDED),
        "rows": record.rows_read,
        "charges": record.charges_created,
        "flagged": record.charges_flagged,
        "carried": record.decisions_carried,
        "list_total": format_money(record.list_total, currency),
        "billed_total": format_money(record.billed_total, currency),
        "error": record.error_message,
        "errors": (record.errors or [])[:50],
        "error_count": len(record.errors or []),
        "warnings": record.warnings or [],
        "supersedes": record.supersedes_id,
        "seconds": round((end - started).total_seconds(), 1) if started and end else 0,
        "url": reverse("admin:billing_import_change", args=[record.pk]),
        "status_url": reverse("admin:billing_import_status", args=[record.pk]),
        "review_url": (reverse("admin:billing_charge_review") + f"?period={record.period.period}")
        if record.period_id and record.period and record.charges_flagged
        else "",
    }


def _refused_upload(name: str, limit: int) -> dict[str, Any]:
    """A file the upload guard cut off while it streamed in (never stored)."""
    return {
        "name": uploads.upload_name(name or "upload"),
        "status": "rejected",
        "status_label": "Not imported",
        "done": True,
        "ok": False,
        "error": f"The file is larger than the upload limit ({uploads.human_size(limit)}); it was not stored.",
    }


def _start_import(request: HttpRequest, uploaded: UploadedFile, data: dict[str, Any]) -> dict[str, Any]:
    """Store one uploaded file as a pending Import and run it as a task (eager: right here)."""
    name = uploads.upload_name(uploaded.name)
    rejected = {"name": name, "status": "rejected", "status_label": "Not imported", "done": True, "ok": False}
    try:
        accepted = uploads.upload_accept(
            name=name, size=uploaded.size, source=data.get("source") or "", period=data.get("period") or ""
        )
    except Refused as exc:
        return {**rejected, "error": str(exc)}
    created_tmp = None
    try:
        if hasattr(uploaded, "temporary_file_path"):
            path = Path(uploaded.temporary_file_path())
        else:
            suffix = ".csv.gz" if name.lower().endswith(".gz") else ".csv"
            with tempfile.NamedTemporaryFile(suffix=suffix, delete=False) as handle:
                for chunk in uploaded.chunks():
                    handle.write(chunk)
            path = created_tmp = Path(handle.name)
        try:
            record = services.import_create(
                path=path,
                source=accepted.source,
                replace=bool(data.get("replace")),
                actor=request.user,
                original_name=name,
            )
        except Refused as exc:
            return {**rejected, "error": str(exc)}
    finally:
        if created_tmp is not None:
            created_tmp.unlink(missing_ok=True)
    try:
        tasks.import_run.delay(record.pk, accepted.period)
    except Exception:  # eager mode: the Import is already marked failed with the reason
        logger.exception("import #%s failed", record.pk)
    record.refresh_from_db()
    return import_status_data(record, selectors.currency_code())


def import_upload(request: HttpRequest, model_admin: Any) -> HttpResponse:
    """Upload one or more FOCUS files: each becomes an Import run by a Celery task."""
    if not roles.can_import(request.user):
        raise PermissionDenied
    wants_json = "application/json" in request.headers.get("Accept", "")
    results: list[dict[str, Any]] = []
    form = UploadForm(request.POST if request.method == "POST" else None)
    if request.method == "POST":
        files = request.FILES.getlist("file")
        refused = getattr(request, "upload_refused", None)  # cut off while it streamed in
        if not files and not refused:
            form.add_error(None, "Choose at least one file.")
        if form.is_valid():
            results = [_start_import(request, uploaded, form.cleaned_data) for uploaded in files]
            if refused:
                results.append(_refused_upload(*refused))
        if wants_json:
            if not form.is_valid():
                return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
            return JsonResponse({"results": results})
    sources = list(Source.objects.filter(is_active=True).order_by("slug"))
    context = _admin_context(
        request,
        model_admin,
        "Import billing files",
        form=form,
        results=results,
        sources=sources,
        sources_data=[{"slug": s.slug, "name": s.display_name} for s in sources],
        periods=list(BillingPeriod.objects.order_by("-period").values_list("period", "status")[:24]),
        max_bytes=settings.OPENCHARGEBACK_UPLOAD_MAX_BYTES,
        max_size=uploads.human_size(settings.OPENCHARGEBACK_UPLOAD_MAX_BYTES),
        accepted=",".join(uploads.ACCEPTED_UPLOADS),
        guess_url=reverse("admin:billing_import_guess"),
        upload_url=reverse("admin:billing_import_upload"),
        history_url=reverse("admin:billing_import_changelist"),
        eager=settings.CELERY_TASK_ALWAYS_EAGER,
    )
    return TemplateResponse(request, "admin/billing/import/upload.html", context)


def import_guess(request: HttpRequest, model_admin: Any) -> JsonResponse:
    """Source and period guessed from file names: ?name=aws_2025-01.csv&name=..."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    sources = list(Source.objects.filter(is_active=True))
    return JsonResponse(
        {"guesses": [uploads.upload_guess(name, sources) for name in request.GET.getlist("name")[:100]]}
    )


def import_status(request: HttpRequest, model_admin: Any, object_id: str) -> JsonResponse:
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    record = get_object_or_404(Import.objects.select_related("source", "period"), pk=object_id)
    return JsonResponse(import_status_data(record, selectors.currency_code()))


def import_download(request: HttpRequest, model_admin: Any, object_id: str) -> FileResponse:
    """The stored copy of an imported file, as uploaded."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    record = get_object_or_404(Import, pk=object_id)
    response = stored_file_response(record.file, record.original_name)
    logger.info("import #%s downloaded by %s", record.pk, request.user)
    return response


def stored_file_response(stored: Any, filename: str) -> FileResponse:
    """A stored file (from disk or object storage) streamed as a download; 404 when it is missing."""
    if not stored:
        raise Http404("no stored file")
    try:
        handle = stored.open("rb")
    except FileNotFoundError:
        raise Http404("the stored file is missing") from None
    return FileResponse(handle, as_attachment=True, filename=download_name(filename))
