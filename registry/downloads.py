"""Streaming downloads: one file (ETag, If-None-Match, Range) or a whole version as a zip built on the fly.

The zip is written by `zipfile` into a sink that cannot seek, so entries get
data descriptors and the bytes go out as they are produced: no temp copy in
memory or on disk, whatever the version's size.
"""

import re
import zipfile
from urllib.parse import quote

from django.http import FileResponse, HttpResponse, StreamingHttpResponse

from tracker import storage

CHUNK = 1024 * 1024
ZIP_CHUNK = 4 * 1024 * 1024  # bigger writes: fewer chunk frames and syscalls on the way out
RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _content_disposition(filename):
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


def _etag(sha256):
    return f'"{sha256}"'


def _etag_matches(header, etag):
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def _limited(fh, start, length):
    try:
        fh.seek(start)
        remaining = length
        while remaining > 0:
            chunk = fh.read(min(CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
    finally:
        fh.close()


def file_response(request, model_file):
    """Stream one ModelFile: attachment, ETag = sha256, 304 on If-None-Match, 206 on a single Range."""
    etag = _etag(model_file.sha256)
    common = {"ETag": etag, "Accept-Ranges": "bytes", "X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=0"}
    if _etag_matches(request.headers.get("If-None-Match"), etag):
        response = HttpResponse(status=304)
        for k, v in common.items():
            response[k] = v
        return response
    size = model_file.size
    range_header = request.headers.get("Range", "")
    if_range = request.headers.get("If-Range")
    if range_header and (not if_range or if_range == etag):
        match = RANGE_RE.match(range_header.strip())
        start = end = None
        if match and (match.group(1) or match.group(2)):
            first, last = match.group(1), match.group(2)
            if first:
                start = int(first)
                end = min(int(last), size - 1) if last else size - 1
            else:  # suffix range: the last N bytes
                start = max(0, size - int(last))
                end = size - 1
        if start is None or start >= size or start > end:
            response = HttpResponse(status=416)
            response["Content-Range"] = f"bytes */{size}"
            for k, v in common.items():
                response[k] = v
            return response
        length = end - start + 1
        response = StreamingHttpResponse(
            _limited(storage.open_blob(model_file.storage_key), start, length),
            status=206,
            content_type="application/octet-stream",
        )
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
        response["Content-Length"] = str(length)
    else:
        response = FileResponse(storage.open_blob(model_file.storage_key), content_type="application/octet-stream")
        response["Content-Length"] = str(size)
    response["Content-Disposition"] = _content_disposition(model_file.name)
    for k, v in common.items():
        response[k] = v
    return response


class _StreamSink:
    """A write-only, non-seekable file object: zipfile writes, the generator drains."""

    def __init__(self):
        self._parts = []
        self._offset = 0

    def write(self, data):
        self._parts.append(bytes(data))
        self._offset += len(data)
        return len(data)

    def tell(self):
        return self._offset

    def seekable(self):
        return False

    def flush(self):
        pass

    def drain(self):
        data = b"".join(self._parts)
        self._parts.clear()
        return data


STORE_SUFFIXES = (".pt", ".pth", ".bin", ".onnx", ".safetensors", ".pt2", ".ckpt", ".zip", ".gz", ".npz", ".data")


def iter_zip(files):
    """Yield the bytes of a zip of `files` (ModelFile rows) as it is built."""
    sink = _StreamSink()
    with zipfile.ZipFile(sink, mode="w", allowZip64=True) as zf:
        for f in files:
            # Weights barely compress: store them, deflate the rest (configs, text).
            method = zipfile.ZIP_STORED if f.path.lower().endswith(STORE_SUFFIXES) else zipfile.ZIP_DEFLATED
            info = zipfile.ZipInfo(f.path, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = method
            info.file_size = f.size
            with storage.open_blob(f.storage_key) as src, zf.open(info, mode="w", force_zip64=f.size > 2**31) as dest:
                while chunk := src.read(ZIP_CHUNK):
                    dest.write(chunk)
                    out = sink.drain()
                    if out:
                        yield out
            out = sink.drain()
            if out:
                yield out
    out = sink.drain()
    if out:
        yield out


def zip_response(version):
    files = list(version.files.all())
    response = StreamingHttpResponse(iter_zip(files), content_type="application/zip")
    name = f"{version.model.name}-v{version.version}.zip".replace(" ", "_")
    response["Content-Disposition"] = _content_disposition(name)
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, max-age=0"
    return response
