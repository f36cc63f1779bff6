"""Handing freed memory back between import stages (billing/ingest/memory.py)."""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from billing.ingest import memory


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim and /proc are Linux's")
def test_freed_arrow_memory_goes_back_to_the_system():
    assert memory._malloc_trim() is not None
    memory.release_unused_memory()
    before = _rss_bytes()
    # 400 MB allocated by pyarrow's pool and freed again: the pool keeps the pages until released.
    numbers = pa.array(np.arange(5_000_000, dtype=np.int64))
    chunks = [pc.add(numbers, i) for i in range(10)]
    assert pa.total_allocated_bytes() >= 400_000_000
    del chunks
    memory.release_unused_memory()
    assert _rss_bytes() - before < 100 * 1024 * 1024


def test_release_is_harmless_anywhere(monkeypatch):
    """Without glibc's malloc_trim (macOS, musl) only arrow's pool is released; with it, both."""
    calls: list[object] = []

    class Pool:
        def release_unused(self) -> None:
            calls.append("pool")

    monkeypatch.setattr(memory.pa, "default_memory_pool", Pool)
    monkeypatch.setattr(memory, "_malloc_trim", lambda: None)
    memory.release_unused_memory()
    assert calls == ["pool"]
    monkeypatch.setattr(memory, "_malloc_trim", lambda: calls.append)
    memory.release_unused_memory()
    assert calls == ["pool", "pool", 0]
