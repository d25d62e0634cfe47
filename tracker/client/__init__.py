"""Torchlight Python client: log params, metrics, tags and artifacts from training code.

Standard library only (no Django). Typical use::

    import tracker.client as tl

    with tl.start_run(experiment="mnist", name="baseline", params={"lr": 0.01}) as run:
        for step in range(1000):
            loss = train_step()
            tl.log_metric("train/loss", loss, step=step)   # never blocks, never raises on network trouble
        tl.log_artifact("model.pt")

Configuration comes from arguments or the environment: TORCHLIGHT_URL
(default http://127.0.0.1:8000), TORCHLIGHT_TOKEN (a personal or run token),
TORCHLIGHT_RUN_ID (inside a job: `active_run()` attaches to that run),
TORCHLIGHT_SPOOL_DIR (default ~/.torchlight/spool), RANK (processes with
RANK != 0 log nothing unless `log_all_ranks=True`).

Delivery: a background thread sends batches of up to 50,000 points in a
packed binary format (JSON to servers older than it), each with an
idempotency key (a retried batch is stored once), retrying with jittered
exponential backoff that honours Retry-After. When the server is
unreachable, batches go to an on-disk spool (JSONL) which is replayed when the
server answers again, on the next start, or by `python -m tracker.client sync
DIR`. Memory is bounded: at most `max_buffer` points (default 100,000, about
12 MB) wait in memory; beyond that the oldest batch moves to the spool.
Everything is flushed on exit (atexit) and on SIGTERM (the previous handler
is chained); outside a job an unfinished run is then finished: completed,
failed after an uncaught exception, canceled on SIGTERM.
"""

import atexit
import math
import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

from tracker.client.sender import DEFAULT_BATCH, DEFAULT_FLUSH_INTERVAL, DEFAULT_MAX_BUFFER, Sender, Spool, replay
from tracker.client.transport import RequestFailed, ServerUnavailable, Transport

__all__ = [
    "Run", "start_run", "active_run", "log_param", "log_params", "log_metric", "log_metrics", "set_tag",
    "set_tags", "set_progress", "log_artifact", "log_artifacts", "finish", "flush", "sync",
    "RequestFailed", "ServerUnavailable",
]  # fmt: skip

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = ("completed", "failed", "canceled")
MAX_STEP = 2**63 - 1

_time = time.time

_current = None
_lock = threading.Lock()


def _rank():
    for name in ("RANK", "SLURM_PROCID"):
        raw = os.environ.get(name)
        if raw not in (None, ""):
            try:
                return int(raw)
            except ValueError:
                return 0
    return 0


class Run:
    """A run being logged to. Methods never raise because of the network; bad arguments raise ValueError.

    Use `start_run()` or `active_run()` to get one. As a context manager it
    finishes the run on exit (completed, or failed on an exception), except
    inside a job, where the job sets the final status.
    """

    def __init__(self, run_id, transport, *, enabled=True, in_job=False, spool_dir=None, batch_size=DEFAULT_BATCH,
                 max_buffer=DEFAULT_MAX_BUFFER, flush_interval=DEFAULT_FLUSH_INTERVAL, info=None, replay_on_start=True):
        self.id = str(run_id)
        self.transport = transport
        self.enabled = enabled
        self.in_job = in_job
        self.info = info or {}
        self.finished = False
        self._keys = {}  # metric key -> [index in the sender's key table, highest step logged]
        self._sender = None
        if enabled:
            self.spool = Spool(spool_dir)
            self._sender = Sender(
                transport, self.id, self.spool, batch_size=batch_size, max_buffer=max_buffer,
                flush_interval=flush_interval, replay_dir=self.spool.dir if replay_on_start else None,
            )  # fmt: skip
            self._rows = self._sender.rows
            self._sender.start()
            _install_exit_hooks()

    def __repr__(self):
        return f"<tracker.client.Run {self.id}>"

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.in_job:
            self.flush()
        elif not self.finished:
            self.finish("failed" if exc_type is not None and exc_type is not KeyboardInterrupt else
                        ("canceled" if exc_type is KeyboardInterrupt else "completed"))
        return False

    # -- metrics: one list.extend, no I/O; the sender thread packs and sends --

    def log_metric(self, key, value, step=None, epoch=None, timestamp=None):
        """Queue one metric point. step None: one past this key's last step. NaN/±Inf are kept as such.

        Raises ValueError for a key that is not a non-empty string, a value
        or epoch that is not a number, a step that is not an integer in
        0 … 2**63-1.
        """
        if not self.enabled:
            return
        try:  # free in the common case (Python 3.11 zero-cost try)
            value = float(value)
            if epoch is not None:
                epoch = float(epoch)
        except TypeError:
            raise ValueError(f"value and epoch must be numbers, got {value!r} and {epoch!r}") from None
        state = self._keys.get(key) or self._new_key(key)
        if step is None:
            step = state[1] + 1
        elif type(step) is not int:
            step = _step(step)
        if step > state[1]:
            if step > MAX_STEP:
                raise ValueError(f"step must be at most 2**63-1, got {step}")
            state[1] = step
        elif step < 0:
            raise ValueError(f"step must be ≥ 0, got {step}")
        rows = self._rows
        rows += (state[0], value, step, timestamp or _time(), epoch)  # one atomic extend; no method lookup
        if len(rows) >= self._sender.wake_at:
            self._sender.buffer_filled()

    def log_metrics(self, metrics, step=None, epoch=None):
        """Queue several metrics at the same step (and epoch) and timestamp. step None: per key, as log_metric."""
        if not self.enabled:
            return
        if step is not None:
            if type(step) is not int:
                step = _step(step)
            if not 0 <= step <= MAX_STEP:
                raise ValueError(f"step must be in 0 … 2**63-1, got {step}")
        try:
            if epoch is not None:
                epoch = float(epoch)
        except TypeError:
            raise ValueError(f"epoch must be a number, got {epoch!r}") from None
        now = _time()
        keys = self._keys
        points = []
        for key, value in metrics.items():  # log_metric's body, inlined: a call per key would double the cost
            try:
                value = float(value)
            except TypeError:
                raise ValueError(f"the value of {key!r} must be a number, got {value!r}") from None
            state = keys.get(key) or self._new_key(key)
            point_step = state[1] + 1 if step is None else step
            if point_step > state[1]:
                state[1] = point_step
            points += (state[0], value, point_step, now, epoch)
        rows = self._rows
        rows += points  # all of them in one atomic extend
        if len(rows) >= self._sender.wake_at:
            self._sender.buffer_filled()

    def _new_key(self, key):
        if not isinstance(key, str) or not key:
            raise ValueError(f"a metric key must be a non-empty string, got {key!r}")
        if len(key.encode("utf-8")) > 0xFFFF:
            raise ValueError("a metric key must be shorter than 64 KiB")
        return self._keys.setdefault(key, [self._sender.key_index(key), -1])

    # -- params, tags, progress: sent in the background, spooled when offline --

    def log_param(self, key, value):
        self.log_params({key: value})

    def log_params(self, params):
        """Params are immutable on the server: the same value again is fine, a different one is refused."""
        if self.enabled and params:
            self._sender.submit({"op": "params", "run_id": self.id, "server": self.transport.url,
                                 "params": {str(k): _text(v) for k, v in params.items()}})

    def set_tag(self, key, value):
        self.set_tags({key: value})

    def set_tags(self, tags):
        if self.enabled and tags:
            self._sender.submit({"op": "tags", "run_id": self.id, "server": self.transport.url,
                                 "tags": {str(k): _text(v) for k, v in tags.items()}})

    def set_progress(self, current, total=None):
        """Report progress (shown with an ETA on the run page)."""
        if self.enabled:
            self._sender.submit({"op": "progress", "run_id": self.id, "server": self.transport.url,
                                 "body": {"current": float(current), "total": None if total is None else float(total)}})

    # -- artifacts: uploaded now (a blocking file upload); spooled as a copy when the server is away --

    def log_artifact(self, path, artifact_path=None):
        """Upload the file at `path` as artifact `artifact_path` (default: its file name). Returns True if uploaded."""
        if not self.enabled:
            return False
        source = Path(path)
        if not source.is_file():
            raise ValueError(f"{path} is not a file")
        name = artifact_path or source.name
        entry = {"op": "artifact", "run_id": self.id, "server": self.transport.url, "path": name, "file": str(source)}
        from tracker.client.sender import send_entry

        try:
            send_entry(self.transport, entry)
            return True
        except RequestFailed as exc:
            sys.stderr.write(f"torchlight: artifact {name} refused: {exc}\n")
            return False
        except ServerUnavailable:
            copy = f"artifact-{uuid.uuid4().hex}"
            self.spool.dir.mkdir(parents=True, exist_ok=True)
            import shutil

            shutil.copyfile(source, self.spool.dir / copy)
            self.spool.write({**entry, "file": copy})
            return False

    def log_artifacts(self, directory, artifact_path=None):
        """Upload every file under `directory`, keeping relative paths (under `artifact_path` if given)."""
        root = Path(directory)
        if not root.is_dir():
            raise ValueError(f"{directory} is not a directory")
        uploaded = 0
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = file.relative_to(root).as_posix()
            uploaded += bool(self.log_artifact(file, f"{artifact_path.rstrip('/')}/{rel}" if artifact_path else rel))
        return uploaded

    # -- end --

    def flush(self, timeout=30.0):
        """Block until what was logged so far is sent or spooled; True when done in time."""
        if not self.enabled:
            return True
        return self._sender.flush(timeout)

    def finish(self, status="completed", timeout=30.0):
        """Flush, then set the run's final status (completed, failed or canceled)."""
        if status not in TERMINAL:
            raise ValueError(f"status must be one of {', '.join(TERMINAL)}")
        if not self.enabled or self.finished:
            return
        self.finished = True
        self._sender.submit({"op": "finish", "run_id": self.id, "server": self.transport.url, "status": status})
        self.close(timeout)

    def close(self, timeout=30.0):
        """Flush and stop the sender (what cannot be sent in `timeout` seconds is spooled)."""
        global _current
        if self._sender is not None and self._sender.is_alive():
            self._sender.close(timeout)
        elif self._sender is not None:
            self._sender.close(0)
        with _lock:
            if _current is self:
                _current = None

    @property
    def stats(self):
        """Counters: points sent, points spooled, requests refused, CPU seconds of the sender thread."""
        s = self._sender
        if s is None:
            return {}
        return {"sent": s.sent_points, "spooled": s.spooled_points, "refused": s.refused, "sender_cpu_s": s.cpu_seconds}


def _step(step):
    """An integral step given as another type (numpy int, a float like 3.0), as int; ValueError otherwise."""
    try:
        as_int = int(step)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"step must be an integer, got {step!r}") from None
    if as_int != step:
        raise ValueError(f"step must be an integer, got {step!r}")
    return as_int


def _text(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return str(value)


def _transport(url, token):
    return Transport(url or os.environ.get("TORCHLIGHT_URL") or DEFAULT_URL, token or os.environ.get("TORCHLIGHT_TOKEN"))


def start_run(experiment=None, name="", params=None, tags=None, *, workspace=None, url=None, token=None,
              log_all_ranks=False, spool_dir=None, batch_size=DEFAULT_BATCH, max_buffer=DEFAULT_MAX_BUFFER,
              flush_interval=DEFAULT_FLUSH_INTERVAL):
    """Create a run in `experiment` (a name: created if missing, or an id) and make it the active run.

    When the server is unreachable the run is still created locally with a
    client-chosen id; its creation is spooled with everything else and
    replayed later. On a rank != 0 process this returns a run that logs
    nothing, unless log_all_ranks=True.
    """
    global _current
    if experiment is None:
        experiment = os.environ.get("TORCHLIGHT_EXPERIMENT") or "Default"
    transport = _transport(url, token)
    enabled = log_all_ranks or _rank() == 0
    run_id = str(uuid.uuid4())
    info = {}
    if enabled:
        body = {"id": run_id, "name": name or "", "params": {str(k): _text(v) for k, v in (params or {}).items()},
                "tags": {str(k): _text(v) for k, v in (tags or {}).items()}}
        if isinstance(experiment, int):
            body["experiment_id"] = experiment
        else:
            body["experiment"] = str(experiment)
        if workspace:
            body["workspace"] = workspace
        run = Run(run_id, transport, spool_dir=spool_dir, batch_size=batch_size, max_buffer=max_buffer,
                  flush_interval=flush_interval)
        try:
            info = transport.call("POST", "/api/v1/runs", body, retries=2)
        except ServerUnavailable:
            run.spool.write({"op": "create_run", "run_id": run_id, "server": transport.url, "body": body})
            run._sender.down_until = time.monotonic() + 5.0  # spool at once; probe again later
            sys.stderr.write(f"torchlight: {transport.url} is unreachable; logging run {run_id} to the spool\n")
        except RequestFailed:
            run.close(0)
            raise
        run.info = info or {}
    else:
        run = Run(run_id, transport, enabled=False)
    with _lock:
        _current = run
    return run


def active_run(*, url=None, token=None, log_all_ranks=False, **options):
    """The active run: the one start_run made, or inside a job the run named by TORCHLIGHT_RUN_ID; else None."""
    global _current
    with _lock:
        if _current is not None:
            return _current
    run_id = os.environ.get("TORCHLIGHT_RUN_ID")
    if not run_id:
        return None
    enabled = log_all_ranks or _rank() == 0
    run = Run(run_id, _transport(url, token), enabled=enabled, in_job=True, **options)
    with _lock:
        if _current is None:
            _current = run
        return _current


def _run():
    run = active_run()
    if run is None:
        raise RuntimeError("no active run: call tracker.client.start_run() first (or run inside a Torchlight job)")
    return run


def log_param(key, value):
    _run().log_param(key, value)


def log_params(params):
    _run().log_params(params)


def log_metric(key, value, step=None, epoch=None):
    """Queue one metric point on the active run (≈1 µs; never blocks, never raises on network trouble)."""
    run = _current or _run()
    run.log_metric(key, value, step, epoch)


def log_metrics(metrics, step=None, epoch=None):
    (_current or _run()).log_metrics(metrics, step=step, epoch=epoch)


def set_tag(key, value):
    _run().set_tag(key, value)


def set_tags(tags):
    _run().set_tags(tags)


def set_progress(current, total=None):
    _run().set_progress(current, total)


def log_artifact(path, artifact_path=None):
    return _run().log_artifact(path, artifact_path)


def log_artifacts(directory, artifact_path=None):
    return _run().log_artifacts(directory, artifact_path)


def flush(timeout=30.0):
    run = _current
    return run.flush(timeout) if run else True


def finish(status="completed"):
    """Finish the active run (inside a job the job sets the final status; this only flushes then)."""
    run = _current
    if run is None:
        return
    if run.in_job:
        run.flush()
    else:
        run.finish(status)


def sync(directory=None, *, url=None, token=None):
    """Replay a spool directory now; returns (requests sent, refused, files left)."""
    transport = _transport(url, token)
    return replay(Path(directory) if directory else Spool().dir, transport)


# -- exit hooks --

_hooks_installed = False
_previous_sigterm = None


_uncaught = False


def _flush_at_exit(status=None):
    """Flush the active run; outside a job also finish it (failed after an uncaught exception, as MLflow does)."""
    run = _current
    if run is None or not run.enabled:
        return
    timeout = float(os.environ.get("TORCHLIGHT_EXIT_FLUSH_SECONDS", "30"))
    if run.in_job or run.finished:
        run.close(timeout=timeout)
    else:
        run.finish(status or ("failed" if _uncaught else "completed"), timeout=timeout)


def _excepthook(exc_type, exc, tb):
    global _uncaught
    _uncaught = True
    _previous_excepthook(exc_type, exc, tb)


_previous_excepthook = sys.excepthook


def _on_sigterm(signum, frame):
    _flush_at_exit("canceled")
    previous = _previous_sigterm
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        return
    else:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _install_exit_hooks():
    global _hooks_installed, _previous_sigterm
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_flush_at_exit)
    global _previous_excepthook
    _previous_excepthook = sys.excepthook
    sys.excepthook = _excepthook
    if threading.current_thread() is threading.main_thread():
        try:
            _previous_sigterm = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError):
            pass
