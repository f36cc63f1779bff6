"""Shared fixtures. The reference month and the synthetic generator live in ../shared/."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
REFERENCE_DIR = SHARED / "reference" / "openchargeback-2025-01"
SYNTH_TOOL = SHARED / "tools" / "focus_synth.py"
DEMO_DIR = ROOT / "fixtures" / "demo"
REFERENCE_SOURCES = ["aws", "azure", "hpc", "it_storage", "storage"]


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
