"""Upload acceptance (billing.services.uploads): types, size, and the source and period a file is
for, the same for the admin's upload page and any other caller."""

from __future__ import annotations

import pytest

from billing.models import Source
from billing.services import uploads
from chargeback.errors import Refused
from tests.factories import SourceFactory

pytestmark = pytest.mark.django_db


def test_upload_accept_rules(settings):
    settings.OPENCHARGEBACK_UPLOAD_MAX_BYTES = 100
    SourceFactory(slug="aws")
    with pytest.raises(Refused, match=r"^Only \.csv and \.csv\.gz files can be imported\.$"):
        uploads.upload_accept(name="aws_2025-01.xlsx", size=10)
    with pytest.raises(Refused, match=r"^The file is larger than the upload limit \(100 bytes\)\.$"):
        uploads.upload_accept(name="aws_2025-01.csv", size=101)
    with pytest.raises(Refused, match=r"^The source could not be told from the file name"):
        uploads.upload_accept(name="export.csv", size=10)
    assert Source.objects.count() == 1

    told = uploads.upload_accept(name="/tmp/exports/aws_2025-01.csv.gz", size=100)
    assert (told.name, told.source.slug, told.period) == ("aws_2025-01.csv.gz", "aws", "2025-01")
    chosen = uploads.upload_accept(name="export.csv", size=None, source="newcloud", period="2025-03")
    assert (chosen.source.slug, chosen.period) == ("newcloud", "2025-03")  # a new name: created
    assert uploads.upload_accept(name="aws.csv", size=1).period is None  # the file tells


def test_upload_guess_and_sizes():
    SourceFactory(slug="aws")
    assert uploads.upload_guess("aws_2025-01.csv") == {
        "name": "aws_2025-01.csv",
        "source": "aws",
        "new_source": "",
        "period": "2025-01",
    }
    assert uploads.upload_guess("it_storage_202502.csv")["new_source"] == "it_storage"
    assert [uploads.human_size(n) for n in (512, 1024, 1536, 5 * 1024**3)] == [
        "512 bytes",
        "1 KB",
        "1.5 KB",
        "5 GB",
    ]
