"""Upload bounds: a multipart body over MAX_UPLOAD_BYTES is stopped while it streams in.

The Content-Length check in config.middleware.RequestSizeLimitMiddleware refuses
honest over-size requests before a byte is read; this handler catches the
dishonest ones (chunked bodies, lying headers). It sits first in
FILE_UPLOAD_HANDLERS, counts every file byte of the request and raises
StopUpload once the total passes the limit: Django then closes (and so deletes)
the temporary files of the handlers after it, and the middleware answers 413.
"""

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload


def too_large_message(limit):
    return f"the upload is larger than the limit of {human_bytes(limit)}"


def human_bytes(n):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:g} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # pragma: no cover


class BoundedUploadHandler(FileUploadHandler):
    """Counts the file bytes of one request; stops the upload past settings.MAX_UPLOAD_BYTES."""

    def __init__(self, request=None):
        super().__init__(request)
        self.limit = settings.MAX_UPLOAD_BYTES
        self.received = 0

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > self.limit:
            if self.request is not None:
                self.request.upload_too_large = True
            # connection_reset: stop reading the body; the rest is never stored.
            raise StopUpload(connection_reset=True)
        return raw_data  # pass through to the memory / temp-file handlers

    def file_complete(self, file_size):
        return None  # the next handler builds the UploadedFile
