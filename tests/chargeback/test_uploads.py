"""The upload limit is enforced while the body streams in: a file past
OPENCHARGEBACK_UPLOAD_MAX_BYTES is cut off at the limit, before the rest is stored, and the upload
page says so."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.files.uploadhandler import MemoryFileUploadHandler, StopUpload, TemporaryFileUploadHandler
from django.test import Client
from django.urls import reverse

from chargeback.uploads import UploadLimitHandler

LIMIT = 100_000


def test_the_handler_stops_at_the_limit(settings, rf):
    settings.OPENCHARGEBACK_UPLOAD_MAX_BYTES = LIMIT
    request = rf.post("/")
    handler = UploadLimitHandler(request)
    handler.new_file("file", "aws_2025-01.csv", "text/csv", None)
    assert handler.receive_data_chunk(b"x" * 65536, 0) == b"x" * 65536
    with pytest.raises(StopUpload) as stopped:
        handler.receive_data_chunk(b"x" * 65536, 65536)
    assert stopped.value.connection_reset
    assert request.upload_refused == ("aws_2025-01.csv", LIMIT)


@pytest.mark.django_db
def test_an_oversized_upload_is_cut_off_before_it_is_stored(settings, monkeypatch):
    from billing import services
    from billing.models import Import

    settings.OPENCHARGEBACK_UPLOAD_MAX_BYTES = LIMIT
    services.source_create(slug="aws")
    stored = {"bytes": 0}
    for handler in (MemoryFileUploadHandler, TemporaryFileUploadHandler):
        original = handler.receive_data_chunk

        def counting(self, raw_data, start, _original=original):
            if getattr(self, "activated", True):  # the memory handler stores only small files
                stored["bytes"] += len(raw_data)
            return _original(self, raw_data, start)

        monkeypatch.setattr(handler, "receive_data_chunk", counting)
    user = get_user_model().objects.create_superuser("root", "root@example.edu", "x" * 20)
    client = Client()
    client.force_login(user)
    big = b"BillingPeriodStart,BilledCost,ResourceId\n" + b"2025-01-01,1,r\n" * 200_000  # 3 MB
    response = client.post(
        reverse("admin:billing_import_upload"),
        {"file": SimpleUploadedFile("aws_2025-01.csv", big)},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 200
    (result,) = response.json()["results"]
    assert result["status"] == "rejected" and "larger than the upload limit" in result["error"]
    assert stored["bytes"] <= LIMIT  # the bytes past the limit never reached a handler that stores
    assert not Import.objects.exists()
