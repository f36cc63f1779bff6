"""The upload size limit, enforced while the request body streams in.

Django stores an uploaded file (in memory, then in a temporary file) before any view sees it, so
a limit checked in the view comes after the whole body was written to disk. `UploadLimitHandler`
runs first among FILE_UPLOAD_HANDLERS: it counts each file's bytes as they arrive and, once one
passes OPENCHARGEBACK_UPLOAD_MAX_BYTES, stops the upload there (the connection is not read any
further; nothing past the limit is stored). The request then carries `upload_refused` (the file
name and the limit) for the view to report.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload


class UploadLimitHandler(FileUploadHandler):
    def __init__(self, request: Any = None) -> None:
        super().__init__(request)
        self.limit = int(settings.OPENCHARGEBACK_UPLOAD_MAX_BYTES)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        if start + len(raw_data) > self.limit:
            if self.request is not None:
                setattr(self.request, "upload_refused", (self.file_name or "", self.limit))  # noqa: B010
            # connection_reset: stop reading the body; the rest of the file never reaches a disk.
            raise StopUpload(connection_reset=True)
        return raw_data  # on to the handlers that store it

    def file_complete(self, file_size: int) -> None:
        return None  # the next handlers make the file
