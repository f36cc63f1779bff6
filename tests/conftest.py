"""Shared fixtures. The reference month and the synthetic generator live in ../shared/."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The shared folder beside the checkout; a checkout elsewhere (a git worktree) names it.
SHARED = Path(os.environ.get("OPENCHARGEBACK_SHARED_DIR") or ROOT.parent / "shared")
REFERENCE_DIR = SHARED / "reference" / "openchargeback-2025-01"
SYNTH_TOOL = SHARED / "tools" / "focus_synth.py"
DEMO_DIR = ROOT / "fixtures" / "demo"
REFERENCE_SOURCES = ["aws", "azure", "hpc", "it_storage", "storage"]
# The reference month's README table: (PI, project) -> (fund/org, billed), every line of it.
REFERENCE_TOTALS = {
    ("zorp.blinkman@example.edu", "genomics-sequencing"): ("BIO-2024-001", "2307.75"),
    ("zorp.blinkman@example.edu", "protein-folding-ml"): ("NIH-R01-2023", "4152.25"),
    ("grix.mottershaw@example.edu", "alzheimers-biomarkers"): ("ADNI-PILOT-2024", "1755.75"),
    ("grix.mottershaw@example.edu", "neuroimaging-atlas"): ("NIMH-2024-003", "3753.75"),
    ("plex.wombsworth@example.edu", "exoplanet-survey"): ("NASA-EXOP-2024", "5100.00"),
    ("quib.flannister@example.edu", "climate-modeling"): ("NSF-ATM-2024", "12.50"),
    ("quib.flannister@example.edu", "ocean-circulation"): ("NOAA-CPO-2024", "1693.00"),
    ("tarn.voxley@example.edu", "quantum-materials"): ("DOE-SC-2024", "735.25"),
    ("drix.kelvington@example.edu", "labor-economics"): ("ECON-DEPT-2024", "711.75"),
    ("frin.bumberly@example.edu", "cfd-turbulence"): ("ENGR-STARTUP", "5.00"),
}


@pytest.fixture(autouse=True)
def _media_in_tmp(settings, tmp_path):
    """Stored imports, PDFs, journals and emails of a test go to its own temporary folder."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.EMAIL_FILE_PATH = tmp_path / "emails"
    settings.OPENCHARGEBACK_JOURNAL_DIR = tmp_path / "journals"


@pytest.fixture
def reference_dir() -> Path:
    if not REFERENCE_DIR.is_dir():
        pytest.fail(f"reference data missing: {REFERENCE_DIR}")
    return REFERENCE_DIR


@pytest.fixture
def demo_dir() -> Path:
    return DEMO_DIR


@pytest.fixture
def reference_sources(db):
    from billing import services

    return [services.source_create(slug=slug) for slug in REFERENCE_SOURCES]


@pytest.fixture
def reference_month(reference_sources, reference_dir):
    """The original product's sample month imported into 2025-01 (source = file prefix)."""
    from billing import services

    for path in sorted(reference_dir.glob("*.csv")):
        services.import_file(path=path, source=path.name.rsplit("_", 1)[0], period="2025-01")
    from billing import selectors

    return selectors.period_get("2025-01")


def make_synthetic(tmp_path: Path, name: str = "aws_2025-01.csv", **options) -> tuple[Path, dict]:
    """Run the shared generator; returns the file and its manifest of exact totals."""
    out = tmp_path / name
    args = [sys.executable, str(SYNTH_TOOL), str(out)]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    subprocess.run(args, check=True)
    manifest = json.loads(Path(str(out) + ".manifest.json").read_text())
    return out, manifest


@pytest.fixture
def synthetic(tmp_path):
    """Factory: synthetic(rows=2000, provider='aws', seed=1, ...) -> (path, manifest)."""

    def build(name: str = "aws_2025-01.csv", **options):
        return make_synthetic(tmp_path, name, **options)

    return build


# --- a local S3-compatible server (moto's server mode, in-process) ---------------------------


@dataclass
class S3Server:
    endpoint: str
    client: Any

    def bucket(self, name: str | None = None) -> str:
        """A new, empty bucket."""
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def read(self, bucket: str, key: str) -> bytes:
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3_server():
    """One moto S3 server for the session on a free local port, with test credentials in the
    environment (boto3, s3fs and django-storages all read them there)."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as patch:
        for key, value in S3_ENV.items():
            patch.setenv(key, value)
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            patch.delenv(key, raising=False)
        client = boto3.client("s3", endpoint_url=endpoint, region_name=S3_ENV["AWS_DEFAULT_REGION"])
        yield S3Server(endpoint=endpoint, client=client)
    server.stop()


@pytest.fixture
def s3_media(s3_server, settings, monkeypatch):
    """Media on the local S3 server (OPENCHARGEBACK_STORAGE_URL=s3://<new bucket>/media), as a
    site with web and worker hosts configures it. Yields (server, bucket)."""
    from chargeback.storage import storages_setting

    bucket = s3_server.bucket()
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    settings.STORAGES = storages_setting(
        f"s3://{bucket}/media", dict(os.environ), settings.STORAGES["staticfiles"]["BACKEND"]
    )
    yield s3_server, bucket
