"""A reader that hashes what passes through it, so a file copied somewhere (into storage, into a
backup archive) is read once for both the copy and its sha256."""

from __future__ import annotations

import hashlib
import io
from typing import BinaryIO


class HashingReader(io.RawIOBase):
    """Wraps a binary file: every read also feeds `digest` (sha256) and counts `size` bytes."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.digest, self.size = raw, hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data
