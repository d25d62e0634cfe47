"""HTTP for the client: standard library only, one keep-alive connection per thread, retries with backoff.

Retries (jittered exponential backoff, honouring `Retry-After`) cover
network errors and 408/425/429/500/502/503/504; other 4xx answers are the
caller's mistake and raise RequestFailed at once.
"""

import email.utils
import http.client
import json
import random
import threading
import time
import urllib.parse

RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}


class ServerUnavailable(Exception):
    """The server could not be reached, or kept answering 5xx/429, after the retries."""


class RequestFailed(Exception):
    """The server refused the request (4xx): retrying would not help."""

    def __init__(self, status, code, message):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def retry_after_seconds(value):
    """Seconds from a Retry-After header (delta seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Transport:
    """Calls the Torchlight REST API at `url` with a bearer `token`.

    max_retries: extra attempts after the first; backoff: first delay in
    seconds, doubled each attempt up to max_backoff, times a jitter of 0.5–1.5.
    """

    def __init__(self, url, token=None, timeout=30.0, max_retries=5, backoff=0.5, max_backoff=30.0):
        parsed = urllib.parse.urlsplit(url.rstrip("/"))
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"TORCHLIGHT_URL must be an http(s) URL, got {url!r}")
        self.url = url.rstrip("/")
        self.scheme = parsed.scheme
        self.host = parsed.hostname
        self.port = parsed.port
        self.prefix = parsed.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.packed_metrics = True  # cleared when the server answers 415 to a packed metrics batch
        self._local = threading.local()

    def _connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            conn = cls(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def close(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _once(self, method, path, body, headers):
        conn = self._connection()
        try:
            if hasattr(body, "seek"):
                body.seek(0)
            conn.request(method, self.prefix + path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if response.getheader("Connection", "").lower() == "close":
            self.close()
        return response.status, response, data

    def call(self, method, path, payload=None, *, body=None, content_type=None, headers=None, retries=None,
             sleep=time.sleep, deadline=None):
        """Send one request; returns the decoded JSON answer (or raw bytes for non-JSON answers).

        `payload` is JSON-encoded; `body` (bytes or a binary file) is sent as
        is. Raises ServerUnavailable after the retries, RequestFailed on 4xx.
        `headers` are added to the request's. `deadline` (time.monotonic())
        stops retrying early.
        """
        headers = {"Accept": "application/json", "User-Agent": "torchlight-client/1", **(headers or {})}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if payload is not None:
            body = json.dumps(payload, allow_nan=False).encode()
            content_type = "application/json"
        if body is not None:
            headers["Content-Type"] = content_type or "application/octet-stream"
            if isinstance(body, (bytes, bytearray)):
                headers["Content-Length"] = str(len(body))
        retries = self.max_retries if retries is None else retries
        attempt = 0
        while True:
            wait = None
            try:
                status, response, data = self._once(method, path, body, headers)
            except (OSError, http.client.HTTPException) as exc:
                problem = f"cannot reach {self.url}: {exc}"
            else:
                if status < 300:
                    if (response.getheader("Content-Type") or "").startswith("application/json"):
                        return json.loads(data or b"null")
                    return data
                code, message = _error_of(data, status)
                if status not in RETRY_STATUSES:
                    raise RequestFailed(status, code, message)
                problem = f"{status} {code}: {message}"
                wait = retry_after_seconds(response.getheader("Retry-After"))
            if attempt >= retries:
                raise ServerUnavailable(problem)
            delay = min(self.max_backoff, self.backoff * (2**attempt)) * random.uniform(0.5, 1.5)
            if wait is not None:
                delay = max(delay, min(wait, self.max_backoff * 4))
            if deadline is not None and time.monotonic() + delay > deadline:
                raise ServerUnavailable(problem + " (gave up: flush deadline)")
            sleep(delay)
            attempt += 1


def _error_of(data, status):
    try:
        error = json.loads(data)["error"]
        return error.get("code", str(status)), error.get("message", "")
    except (ValueError, KeyError, TypeError):
        return str(status), data[:200].decode("utf-8", "replace") if data else ""
