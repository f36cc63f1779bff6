"""File names offered for download (Content-Disposition), from values people and files chose.

A project id, an uploaded file's name or a journal format's name may hold a CR or LF (a header
injection, and Django refuses such a header: BadHeaderError, a 500), quotes, path separators or
other control characters. Every download names its file through `download_name`: control and
separator characters become "_", the name is cut to a length every browser and file system
takes (keeping its extension), and non-ASCII letters stay (Django sends them as filename*=UTF-8).
"""

from __future__ import annotations

import re
import unicodedata

from django.utils.http import content_disposition_header

MAX_NAME = 150
_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\x9f"\\/:*?<>|;\u2028\u2029\ufeff]+')


def download_name(name: str, default: str = "download") -> str:
    """A file name safe in a Content-Disposition header and on any file system."""
    text = unicodedata.normalize("NFC", name or "")
    text = _UNSAFE.sub("_", text)
    text = " ".join(text.split()).strip(" ._")
    if not text:
        return default
    if len(text) > MAX_NAME:
        stem, dot, extension = text.rpartition(".")
        if dot and 0 < len(extension) <= 10:
            text = stem[: MAX_NAME - len(extension) - 1].rstrip(" ._") + "." + extension
        else:
            text = text[:MAX_NAME].rstrip(" ._")
    return text


def attachment_header(name: str, default: str = "download") -> str:
    """The Content-Disposition value of an attachment called `name` (made safe)."""
    header = content_disposition_header(True, download_name(name, default))
    assert header is not None
    return header
