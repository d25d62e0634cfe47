"""The background sender and the on-disk spool.

The training loop only extends a flat in-memory list, five items per point
(key index, value, step, timestamp, epoch; `Run.log_metric`). A daemon
thread takes the oldest points in batches of up to `batch_size`, packs each
batch in the binary wire format (`tracker.client.wire`: one struct.pack per
column, no per-point Python code) with its own idempotency key, and sends
it, retrying with backoff. A server that answers 415 to the packed body (one
older than the format) gets JSON from then on. When the server stays
unreachable the batch goes to the spool (JSONL files under
`~/.torchlight/spool` or TORCHLIGHT_SPOOL_DIR; a packed batch as base64) and
later batches go there directly until a probe succeeds; the spool is
replayed then, on the next start, or by `python -m tracker.client sync DIR`.

Flush policy: the sender wakes every `flush_interval` seconds, or as soon as
20,000 points wait, and sends everything buffered in requests of up to
`batch_size` points (default 50,000, the server's limit: a loop logging
faster than the requests go gets bigger requests, not more of them).

Memory bound: at most `max_buffer` points wait in memory (default 100,000,
about 12 MB), plus what the thread is sending (one batch, or a tenth of
`max_buffer` if that is more); beyond that the oldest batch is moved to the
spool by the training thread (a disk append, never a network wait).
"""

import base64
import json
import logging
import math
import os
import threading
import time
import uuid
from collections import deque
from pathlib import Path

from tracker.client import wire
from tracker.client.transport import RequestFailed, ServerUnavailable

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer per spool directory then
    fcntl = None

log = logging.getLogger("torchlight.client")

DEFAULT_BATCH = 50_000  # points per request at most: the server's limit; big requests keep up with tight loops
DEFAULT_MAX_BUFFER = 100_000
DEFAULT_FLUSH_INTERVAL = 2.0  # seconds: how stale the dashboard may be vs. a request's fixed cost
MAX_BATCH = 50_000  # the server's limit per request
WAKE_POINTS = 20_000  # the thread wakes when this many points wait (or a batch, if smaller), else every interval
PROBE_EVERY = 5.0
ROW = 5  # buffer items per point: key index, value, step, timestamp, epoch


def default_spool_dir():
    return Path(os.environ.get("TORCHLIGHT_SPOOL_DIR") or Path.home() / ".torchlight" / "spool")


def wire_value(value):
    """A float for JSON: NaN/±Inf as the strings the API takes."""
    if value != value:
        return "NaN"
    if value == math.inf:
        return "Infinity"
    if value == -math.inf:
        return "-Infinity"
    return value


def wire_points(points):
    """[key, value, step, timestamp, epoch] lists (the API's compact point form)."""
    out = []
    for key, value, step, ts, epoch in points:
        if not math.isfinite(value):
            value = wire_value(value)
        out.append([key, value, step, ts, epoch])
    return out


def _lock_file(handle):
    """An exclusive, non-blocking advisory lock (OSError when another holds it)."""
    if fcntl is not None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlock_file(handle):
    if fcntl is not None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class Spool:
    """Append-only JSONL files of requests that could not be delivered; one file per writer, locked."""

    def __init__(self, directory=None):
        self.dir = Path(directory) if directory else default_spool_dir()
        self._file = None
        self._lock = threading.Lock()
        self.written = 0

    def _open(self):
        if self._file is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            # Names sort in creation order (replay order): nanoseconds, then pid.
            name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
            self._file = open(self.dir / name, "a", encoding="utf-8")
            _lock_file(self._file)  # replayers skip a file in use
        return self._file

    def write(self, entry):
        if isinstance(entry.get("packed"), bytes):
            entry = {**entry, "packed": base64.b64encode(entry["packed"]).decode("ascii")}
        try:
            line = json.dumps(entry, allow_nan=False, separators=(",", ":")) + "\n"
        except ValueError:  # NaN/±Inf among raw points
            entry = {**entry, "points": wire_points(entry["points"])}
            line = json.dumps(entry, allow_nan=False, separators=(",", ":")) + "\n"
        with self._lock:
            f = self._open()
            f.write(line)
            f.flush()
            self.written += 1

    def close(self):
        with self._lock:
            if self._file is not None:
                try:
                    os.fsync(self._file.fileno())
                except OSError:
                    pass
                _unlock_file(self._file)
                self._file.close()
                self._file = None

    @property
    def has_file(self):
        return self._file is not None


def replay(directory, transport, server=None, log_fn=None):
    """Send every spooled request in `directory`: run creations first, then the rest, oldest file first.

    Files in use by a live writer are skipped. A fully delivered file is
    deleted; on a network failure the replay stops and keeps the rest (a
    second replay is harmless: batches carry idempotency keys, params
    repeat their value, tags overwrite, a run creation with a known id
    answers with that run). Returns (entries sent, entries refused by the
    server, files left).
    """
    directory = Path(directory)
    sent = refused = 0
    if not directory.is_dir():
        return 0, 0, 0
    files = []  # (path, open handle holding the lock, entries)
    left = 0
    try:
        for path in sorted(directory.glob("*.jsonl")):
            try:
                handle = open(path, encoding="utf-8")
            except OSError:
                continue
            try:
                _lock_file(handle)
            except OSError:
                handle.close()
                left += 1
                continue
            try:
                entries = [json.loads(line) for line in handle if line.strip()]
            except ValueError:
                log.warning("torchlight: spool file %s is damaged; keeping it", path)
                handle.close()
                left += 1
                continue
            files.append((path, handle, entries))
        ordered = [(i, e) for i, (_p, _h, es) in enumerate(files) for e in es if e.get("op") == "create_run"]
        ordered += [(i, e) for i, (_p, _h, es) in enumerate(files) for e in es if e.get("op") != "create_run"]
        failed = set()
        for i, entry in ordered:
            if server and entry.get("server") and entry["server"].rstrip("/") != server.rstrip("/"):
                failed.add(i)  # another server's entries stay for their own sync
                continue
            if failed and len(failed) == len(files):
                break
            try:
                send_entry(transport, entry, directory)
                sent += 1
            except RequestFailed as exc:
                if exc.status == 404:
                    failed.add(i)  # its run is unknown here (yet): keep it for a later sync
                    continue
                refused += 1
                if log_fn:
                    log_fn(f"refused: {entry.get('op')} for run {entry.get('run_id')}: {exc}")
            except ServerUnavailable:
                failed.update(range(len(files)))
                break
        for i, (path, _handle, entries) in enumerate(files):
            if i in failed:
                left += 1
                continue
            for entry in entries:
                if entry.get("op") == "artifact" and not os.path.isabs(entry["file"]):
                    (directory / entry["file"]).unlink(missing_ok=True)
            path.unlink()
    finally:
        for _path, handle, _entries in files:
            handle.close()
    return sent, refused, left


def metrics_body(entry):
    """The JSON body of a metrics entry; tuples encode as arrays, NaN/±Inf as strings (rare: slow path)."""
    payload = {"idempotency_key": entry["idempotency_key"], "points": entry["points"]}
    try:
        return json.dumps(payload, allow_nan=False, separators=(",", ":")).encode()
    except ValueError:
        entry["points"] = wire_points(entry["points"])
        payload["points"] = entry["points"]
        return json.dumps(payload, allow_nan=False, separators=(",", ":")).encode()


def send_metrics(transport, entry, retries=None, deadline=None):
    """POST one metrics batch: packed when the entry is and the server takes it, else JSON.

    A 415 answer to the packed body means a server older than the format:
    the same batch (same idempotency key: nothing was stored) goes again as
    JSON, and the transport remembers to send JSON from then on.
    """
    path = f"/api/v1/runs/{entry['run_id']}/metrics"
    key = entry["idempotency_key"]
    packed = entry.get("packed")
    if isinstance(packed, str):  # from the spool
        packed = base64.b64decode(packed)
    if packed is not None and transport.packed_metrics:
        try:
            return transport.call("POST", path, body=packed, content_type=wire.CONTENT_TYPE,
                                  headers={"Idempotency-Key": key}, retries=retries, deadline=deadline)  # fmt: skip
        except RequestFailed as exc:
            if exc.status != 415:
                raise
            transport.packed_metrics = False
            log.info("torchlight: %s does not take packed metrics (an older server); sending JSON", transport.url)
    if packed is not None:
        entry = {"idempotency_key": key, "points": list(wire.decode_points(packed).points())}
    return transport.call(
        "POST", path, body=metrics_body(entry), content_type="application/json", retries=retries, deadline=deadline
    )


def send_entry(transport, entry, directory=None, retries=None, deadline=None):
    """Deliver one request (a spool entry). Treats 'already there' answers as delivered."""
    op = entry["op"]
    run = entry.get("run_id")
    kwargs = {"retries": retries, "deadline": deadline}
    if op == "metrics":
        result = send_metrics(transport, entry, **kwargs)
        if result and result.get("errors"):
            log.warning("torchlight: %d points refused, first: %s", len(result["errors"]), result["errors"][0])
        return result
    if op == "create_run":
        return transport.call("POST", "/api/v1/runs", entry["body"], **kwargs)
    if op == "params":
        return transport.call("POST", f"/api/v1/runs/{run}/params", {"params": entry["params"]}, **kwargs)
    if op == "tags":
        return transport.call("POST", f"/api/v1/runs/{run}/tags", {"tags": entry["tags"]}, **kwargs)
    if op == "progress":
        return transport.call("POST", f"/api/v1/runs/{run}/progress", entry["body"], **kwargs)
    if op == "finish":
        try:
            return transport.call("PATCH", f"/api/v1/runs/{run}", {"status": entry["status"]}, **kwargs)
        except RequestFailed as exc:
            if exc.code == "run_ended":
                return None  # someone finished it already: nothing to do
            raise
    if op == "artifact":
        source = Path(directory or ".") / entry["file"] if not os.path.isabs(entry["file"]) else Path(entry["file"])
        with open(source, "rb") as body:
            return transport.call(
                "PUT", f"/api/v1/runs/{run}/artifacts/{_quote(entry['path'])}", body=body, **kwargs
            )
    raise ValueError(f"unknown spool entry {op!r}")


def _quote(path):
    import urllib.parse

    return urllib.parse.quote(path, safe="/")


class Sender(threading.Thread):
    """Drains points and small requests to the server in the background; never raises into the caller.

    The training thread appends points to `rows` (ROW items each, one
    `list.extend` call: atomic under the GIL, so several logging threads
    never interleave) and this thread removes whole points from the front;
    neither ever replaces the list.
    """

    def __init__(self, transport, run_id, spool, *, batch_size=DEFAULT_BATCH, max_buffer=DEFAULT_MAX_BUFFER,
                 flush_interval=DEFAULT_FLUSH_INTERVAL, replay_dir=None):
        super().__init__(name="torchlight-sender", daemon=True)
        self.transport = transport
        self.run_id = run_id
        self.spool = spool
        self.batch_size = min(MAX_BATCH, max(1, int(batch_size)))
        self.max_buffer = max(self.batch_size, int(max_buffer))
        self.flush_interval = flush_interval
        self.replay_dir = replay_dir
        self.rows = []
        self.keys = []  # metric keys by index
        self._key_index = {}
        self._key_lock = threading.Lock()
        self._take_lock = threading.Lock()  # the training thread (spill) and this one both take from the front
        self._batch_rows = self.batch_size * ROW
        self._full_rows = self.max_buffer * ROW
        # The thread takes several batches at once from a big backlog: each take moves what stays in the list.
        self._take_rows = max(self._batch_rows, self._full_rows // 10 // self._batch_rows * self._batch_rows)
        self._wake_rows = min(self.batch_size, WAKE_POINTS) * ROW
        self.wake_at = self._wake_rows  # the training thread calls buffer_filled() at this many rows
        self.requests = deque()  # spool-entry dicts (params, tags, progress, ...) in order
        self.wake = threading.Event()
        self.idle = threading.Event()
        self.idle.set()
        self.closing = False
        self.flushing = False  # flush() waits: drain everything, not only full batches
        self.down_until = 0.0
        self.deadline = None
        self.sent_points = 0
        self.spooled_points = 0
        self.refused = 0
        self.cpu_seconds = 0.0  # this thread's CPU time: packing, sending, spooling
        self.last_error = None

    @property
    def buffered(self):
        """Points waiting in memory."""
        return len(self.rows) // ROW

    # -- called from the training thread: cheap, never blocks on the network --

    def key_index(self, key):
        """The index of metric key `key` in this run's key table (added on first use)."""
        with self._key_lock:
            index = self._key_index.get(key)
            if index is None:
                index = self._key_index[key] = len(self.keys)
                self.keys.append(key)
            return index

    def buffer_filled(self):
        """A batch is waiting (wake the thread) or the memory bound is reached (spill the oldest batch to disk)."""
        if len(self.rows) >= self._full_rows:
            self._spill()
        else:
            self.wake_at = self._full_rows  # one wake-up is enough until the thread has taken the batch
            self.wake.set()

    def submit(self, entry):
        self.requests.append(entry)
        self.idle.clear()
        self.wake.set()

    def _take(self, limit, timeout=-1):
        """Remove and return up to `limit` oldest rows (whole points) from the buffer; appends may go on meanwhile.

        None when the lock was not had within `timeout` seconds.
        """
        if not self._take_lock.acquire(timeout=timeout):
            return None
        try:
            rows = self.rows
            n = min(len(rows), limit)
            batch = rows[:n]
            del rows[:n]
        finally:
            self._take_lock.release()
        return batch

    def _spill(self):
        """Buffer full: move the oldest batch to the spool (disk), keeping memory bounded."""
        batch = self._take(self._batch_rows)
        if batch:
            entry = self._metrics_entry(batch)
            self.spooled_points += len(batch) // ROW
            self.spool.write(entry)

    def _metrics_entry(self, batch):
        """A metrics request for flat rows: packed (each column one struct.pack call)."""
        key_index = batch[0::ROW]
        entry = {
            "op": "metrics", "run_id": self.run_id, "server": self.transport.url,
            "idempotency_key": uuid.uuid4().hex, "count": len(key_index),
        }  # fmt: skip
        keys = self.keys[: max(key_index) + 1]
        try:
            entry["packed"] = wire.encode_columns(
                keys, key_index, batch[1::ROW], batch[2::ROW], batch[3::ROW], batch[4::ROW]
            )
        except ValueError:  # a point the format cannot carry: JSON, where the server answers per point
            columns = zip(key_index, batch[1::ROW], batch[2::ROW], batch[3::ROW], batch[4::ROW], strict=True)
            entry["points"] = [[keys[k], v, s, t, e] for k, v, s, t, e in columns]
        return entry

    # -- the thread --

    def run(self):
        if self.replay_dir is not None:
            self._replay()
        while True:
            self.wake.wait(self.flush_interval)
            self.wake.clear()
            started = time.thread_time()
            try:
                self._drain()
            except Exception as exc:  # never die: keep spooling
                self.last_error = exc
                log.warning("torchlight: sender error: %s", exc)
            self.cpu_seconds += time.thread_time() - started
            if not self.rows and not self.requests:
                self.flushing = False
                self.idle.set()
                if self.closing:
                    return

    def _server_down(self):
        return time.monotonic() < self.down_until

    def _mark_down(self, exc):
        self.last_error = exc
        if not self._server_down():
            log.warning("torchlight: server unreachable, spooling to %s (%s)", self.spool.dir, exc)
        self.down_until = time.monotonic() + PROBE_EVERY

    def _retries(self):
        return 0 if self._server_down() else None

    def _drain(self):
        # Points first: a finish request queued behind them must reach the server after them.
        self._drain_points()
        if self.requests:
            while self.requests:
                self._deliver(self.requests.popleft())
            self._drain_points()

    def _drain_points(self):
        """Send what is buffered; what arrives meanwhile waits for the next wake-up unless it is a batch's worth.

        (Taking the remainder at once would send a stream of small requests,
        each with its fixed cost, while the loop logs.) A flush or close takes
        everything.
        """
        self.wake_at = self._wake_rows
        first = True
        while first or self.closing or self.flushing or len(self.rows) >= self._wake_rows:
            first = False
            taken = self._take(self._take_rows)
            if not taken:
                return
            for start in range(0, len(taken), self._batch_rows):
                entry = self._metrics_entry(taken[start : start + self._batch_rows])
                if self._deliver(entry):
                    self.sent_points += entry["count"]
                else:
                    self.spooled_points += entry["count"]

    def _deliver(self, entry):
        """Send one request; on failure spool it. True when the server took it."""
        if self._server_down() and not self.closing:
            self.spool.write(entry)
            return False
        try:
            send_entry(self.transport, entry, retries=self._retries(), deadline=self.deadline)
        except RequestFailed as exc:
            self.refused += 1
            self.last_error = exc
            log.warning("torchlight: the server refused %s: %s", entry["op"], exc)
            return True
        except ServerUnavailable as exc:
            self._mark_down(exc)
            self.spool.write(entry)
            return False
        if self.spool.has_file or self.down_until:
            self.down_until = 0.0
            self._replay()
        return True

    def _replay(self):
        """The server answers again: deliver what this and earlier processes spooled."""
        directory = self.replay_dir or self.spool.dir
        self.spool.close()  # our own file becomes replayable
        try:
            sent, refused, _left = replay(directory, self.transport, server=self.transport.url)
        except Exception as exc:
            log.warning("torchlight: spool replay failed: %s", exc)
            return
        if sent or refused:
            log.info("torchlight: replayed %d spooled requests (%d refused)", sent, refused)

    def flush(self, timeout=30.0):
        """Wait until everything logged so far was sent (or spooled); True if done in time."""
        self.flushing = True
        self.idle.clear()
        self.wake.set()
        return self.idle.wait(timeout)

    def close(self, timeout=30.0):
        """Flush, stop the thread; what could not be sent within `timeout` goes to the spool."""
        self.deadline = time.monotonic() + timeout
        self.closing = True
        self.idle.clear()
        self.wake.set()
        if self.is_alive():
            self.join(timeout + 1)
        # The thread is gone (or stuck): anything left is written to disk, never lost.
        while self.rows:
            batch = self._take(self._batch_rows, timeout=1.0)
            if batch is None:
                # A SIGTERM handler (this close) interrupted this very thread inside _take's lock, during a
                # spill: spool a copy of everything rather than wait forever (a replay may store a batch twice).
                log.warning("torchlight: buffer busy at exit; spooling a copy of it")
                copy = self.rows[: len(self.rows) // ROW * ROW]
                for start in range(0, len(copy), self._batch_rows):
                    self.spool.write(self._metrics_entry(copy[start : start + self._batch_rows]))
                self.spooled_points += len(copy) // ROW
                break
            self.spooled_points += len(batch) // ROW
            self.spool.write(self._metrics_entry(batch))
        while self.requests:
            self.spool.write(self.requests.popleft())
        self.spool.close()
