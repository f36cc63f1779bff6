"""Give memory an import no longer uses back to the operating system.

Neither allocator does so by itself soon enough: pyarrow's mimalloc pool keeps freed pages for
reuse, and glibc's malloc keeps the free space of Python's temporaries (a batch's strings) in its
heap. A million-row import frees several hundred MB between stages; returning it there keeps the
peak to what each stage really holds (measured: about 350 MB less at 1M rows).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable
from functools import cache

import pyarrow as pa


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where there is none (macOS, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
        return trim
    except (OSError, AttributeError):
        return None


def release_unused_memory() -> None:
    """Return freed arrow and malloc memory to the system (a few milliseconds)."""
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
