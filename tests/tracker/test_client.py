"""tracker.client against a real live server over real HTTP (no mocks of the client's HTTP)."""

import base64
import http.server
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest

import tracker.client as tl
from tracker.client import wire
from tracker.client.transport import Transport, retry_after_seconds
from tracker.models import ApiToken, Artifact, IngestBatch, MetricPoint, Param, Run, RunStatus, RunTag

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def token(owner, workspace):
    return ApiToken.mint(owner, "client tests")[1]


@pytest.fixture(autouse=True)
def _forget_active_run(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHLIGHT_RUN_ID", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv("TORCHLIGHT_SPOOL_DIR", str(tmp_path / "default-spool"))
    yield
    if tl._current is not None:
        tl._current.close(timeout=5)
    tl._current = None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def history(run_id, key):
    return list(MetricPoint.objects.filter(series__run_id=run_id, series__key=key).order_by("step", "id")
                .values_list("step", "value"))


def test_it_logs_a_whole_run_through_the_api(live_server, token, tmp_path):
    artifact = tmp_path / "weights.bin"
    artifact.write_bytes(b"\x00" * 100)
    (tmp_path / "out" / "sub").mkdir(parents=True)
    (tmp_path / "out" / "a.txt").write_text("a")
    (tmp_path / "out" / "sub" / "b.txt").write_text("b")
    with tl.start_run(experiment="client-exp", name="r1", params={"lr": 0.1}, url=live_server.url, token=token,
                      spool_dir=tmp_path / "spool", flush_interval=0.05) as run:
        for step in range(2500):
            tl.log_metric("train/loss", 1.0 / (step + 1), step=step, epoch=step // 100)
        tl.log_metrics({"acc": 0.5, "nan": float("nan"), "inf": float("inf")}, step=7)
        tl.log_metric("auto", 1.0)
        tl.log_metric("auto", 2.0)
        tl.log_param("bs", 32)
        tl.set_tag("team", "vision")
        tl.set_progress(5, 10)
        assert tl.log_artifact(artifact) is True
        assert tl.log_artifacts(tmp_path / "out", artifact_path="outputs") == 2
    saved = Run.objects.get(pk=run.id)
    assert saved.status == RunStatus.COMPLETED and saved.name == "r1" and saved.experiment.name == "client-exp"
    steps = history(run.id, "train/loss")
    assert [s for s, _ in steps] == list(range(2500)) and steps[9][1] == pytest.approx(0.1)
    assert history(run.id, "auto") == [(0, 1.0), (1, 2.0)]
    assert history(run.id, "nan") == [(7, None)] and history(run.id, "inf") == [(7, float("inf"))]
    assert dict(Param.objects.filter(run_id=run.id).values_list("key", "value")) == {"lr": "0.1", "bs": "32"}
    assert RunTag.objects.get(run_id=run.id, key="team").value == "vision"
    assert saved.progress_current == 5
    assert sorted(Artifact.objects.filter(run_id=run.id).values_list("path", flat=True)) == [
        "outputs/a.txt", "outputs/sub/b.txt", "weights.bin",
    ]  # fmt: skip
    assert not list((tmp_path / "spool").glob("*.jsonl"))
    assert run.transport.packed_metrics is True  # the server took the packed batches: no JSON fallback


@pytest.mark.slow
def test_it_keeps_training_when_the_server_is_down_and_syncs_later(live_server, token, tmp_path):
    spool = tmp_path / "spool"
    down = f"http://127.0.0.1:{free_port()}"
    run = tl.start_run(experiment="offline", name="away", params={"lr": 1}, url=down, token=token, spool_dir=spool,
                       batch_size=500, max_buffer=2000, flush_interval=0.05)
    peak = 0
    for step in range(6000):
        run.log_metric("loss", float(step), step=step)
        peak = max(peak, run._sender.buffered)
    run.set_tag("where", "offline")
    run.finish("completed", timeout=5)
    assert peak <= 2000  # the in-memory buffer stays bounded
    assert not Run.objects.filter(pk=run.id).exists()
    assert list(spool.glob("*.jsonl"))
    # Replay with the real command line.
    result = subprocess.run(
        [sys.executable, "-m", "tracker.client", "sync", str(spool), "--url", live_server.url, "--token", token],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    saved = Run.objects.get(pk=run.id)
    assert saved.status == RunStatus.COMPLETED and saved.name == "away"
    assert [s for s, _ in history(run.id, "loss")] == list(range(6000))
    assert RunTag.objects.get(run_id=run.id, key="where").value == "offline"
    assert not list(spool.glob("*.jsonl"))
    # A second sync finds nothing and stores nothing twice.
    again = subprocess.run([sys.executable, "-m", "tracker.client", "sync", str(spool), "--url", live_server.url,
                            "--token", token], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert again.returncode == 0 and MetricPoint.objects.filter(series__run_id=run.id).count() == 6000


class FlakyProxy(http.server.BaseHTTPRequestHandler):
    """Forwards to the live server, but answers 503 to the first `fail` metric posts after forwarding them.

    With `refuse_packed` it answers 415 to packed metric posts without forwarding them, as a server
    older than the packed format does (the live server may take them by now).
    """

    upstream = None
    fail = 2
    retry_after = None
    refuse_packed = False  # answer 415 to packed metrics, as a server older than the format does
    seen = []
    content_types = []

    def log_message(self, *args):
        pass

    def _forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if self.path.endswith("/metrics") and self.command == "POST":
            type(self).content_types.append(self.headers.get("Content-Type"))
            if self.refuse_packed and self.headers.get("Content-Type") != "application/json":
                return self._answer(415, b'{"error": {"code": "unsupported_media_type", "message": "JSON only"}}')
        req = urllib.request.Request(self.upstream + self.path, data=body, method=self.command,
                                     headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, data, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            status, data, ctype = exc.code, exc.read(), exc.headers.get("Content-Type", "")
        is_metrics = self.path.endswith("/metrics") and self.command == "POST"
        if is_metrics:
            key = self.headers.get("Idempotency-Key") or json.loads(body)["idempotency_key"]
            type(self).seen.append((time.monotonic(), key))
            if type(self).fail > 0:
                type(self).fail -= 1
                status, data, ctype = 503, b'{"error": {"code": "unavailable", "message": "try later"}}', "application/json"
        self._answer(status, data, ctype, retry_after=is_metrics and status == 503 and self.retry_after is not None)

    def _answer(self, status, data, ctype="application/json", retry_after=False):
        self.send_response(status)
        if retry_after:
            self.send_header("Retry-After", str(self.retry_after))
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = _forward


@pytest.fixture
def flaky(live_server):
    FlakyProxy.upstream = live_server.url
    FlakyProxy.fail = 2
    FlakyProxy.retry_after = None
    FlakyProxy.refuse_packed = False
    FlakyProxy.seen = []
    FlakyProxy.content_types = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FlakyProxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_it_stores_a_batch_retried_after_two_503s_once(flaky, token, tmp_path):
    run = tl.start_run(experiment="flaky", url=flaky, token=token, spool_dir=tmp_path / "s", flush_interval=0.05)
    run.transport.backoff = 0.01
    for step in range(100):
        run.log_metric("loss", float(step), step=step)
    assert run.flush(timeout=30)
    keys = [k for _t, k in FlakyProxy.seen]
    # The same batch, three times (a fourth, as JSON, when the server answered 415 to the packed third).
    assert len(keys) == 3 + (not run.transport.packed_metrics) and len(set(keys)) == 1
    assert [s for s, _ in history(run.id, "loss")] == list(range(100))  # stored once
    assert IngestBatch.objects.filter(run_id=run.id).count() == 1
    run.finish()


def test_it_honours_retry_after(flaky, token, tmp_path):
    FlakyProxy.fail = 1
    FlakyProxy.retry_after = 1
    run = tl.start_run(experiment="flaky", url=flaky, token=token, spool_dir=tmp_path / "s", flush_interval=0.05)
    run.transport.backoff = 0.01
    run.log_metric("loss", 1.0)
    assert run.flush(timeout=30)
    (t1, _), (t2, _) = FlakyProxy.seen[:2]  # the 503, then the retry (and a JSON resend on a 415)
    assert t2 - t1 >= 0.9
    assert retry_after_seconds("3") == 3.0 and retry_after_seconds("junk") is None
    run.finish()


def test_it_logs_nothing_on_other_ranks_unless_asked(live_server, token, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    run = tl.start_run(experiment="ranks", url=live_server.url, token=token, spool_dir=tmp_path / "s")
    tl.log_metric("loss", 1.0)
    run.finish()
    assert not Run.objects.exists()
    tl._current = None
    run = tl.start_run(experiment="ranks", url=live_server.url, token=token, spool_dir=tmp_path / "s",
                       log_all_ranks=True, flush_interval=0.05)
    tl.log_metric("loss", 1.0)
    run.finish()
    assert history(run.id, "loss") == [(0, 1.0)]


def test_it_attaches_to_the_job_run_from_the_environment(live_server, owner, run, tmp_path, monkeypatch):
    _t, raw = ApiToken.mint(owner, "job", run=run)
    monkeypatch.setenv("TORCHLIGHT_URL", live_server.url)
    monkeypatch.setenv("TORCHLIGHT_RUN_ID", str(run.id))
    monkeypatch.setenv("TORCHLIGHT_TOKEN", raw)
    with tl.active_run(spool_dir=tmp_path / "s", flush_interval=0.05) as job_run:
        assert job_run.id == str(run.id) and job_run.in_job
        tl.log_metrics({"loss": 0.5, "acc": 0.9}, step=3)
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING  # the job, not the script, sets the final status
    assert history(run.id, "acc") == [(3, 0.9)]


@pytest.mark.slow
def test_it_flushes_on_sigterm_and_chains_the_previous_handler(live_server, token, tmp_path):
    script = textwrap.dedent(
        f"""
        import os, signal, sys, time
        signal.signal(signal.SIGTERM, lambda s, f: (open({str(tmp_path / 'chained')!r}, 'w').close(), sys.exit(3)))
        import tracker.client as tl
        run = tl.start_run(experiment="sig", url={live_server.url!r}, token={token!r}, spool_dir={str(tmp_path / 's')!r},
                           flush_interval=60)
        print(run.id, flush=True)
        for i in range(3000):
            tl.log_metric("loss", float(i))
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 3, proc.stderr
    assert (tmp_path / "chained").exists()
    run_id = proc.stdout.split()[0]
    assert [s for s, _ in history(run_id, "loss")] == list(range(3000))
    assert Run.objects.get(pk=run_id).status == RunStatus.CANCELED


@pytest.mark.slow
def test_it_finishes_an_unfinished_run_at_exit_as_failed_after_a_crash(live_server, token, tmp_path):
    script = textwrap.dedent(
        f"""
        import tracker.client as tl
        run = tl.start_run(experiment="crash", url={live_server.url!r}, token={token!r}, spool_dir={str(tmp_path)!r})
        print(run.id, flush=True)
        tl.log_metric("loss", 1.0)
        raise RuntimeError("boom")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 1 and "boom" in proc.stderr
    saved = Run.objects.get(pk=proc.stdout.split()[0])
    assert saved.status == RunStatus.FAILED and history(saved.pk, "loss") == [(0, 1.0)]


def test_it_refuses_a_bad_url_and_bad_status_clearly(token):
    with pytest.raises(ValueError):
        Transport("ftp://nowhere")
    run = tl.Run("00000000-0000-0000-0000-000000000000", Transport("http://127.0.0.1:9"), enabled=False)
    with pytest.raises(ValueError):
        run.finish("done")
    assert os.environ.get("RANK") is None


def test_it_falls_back_to_json_for_a_server_without_the_packed_format(flaky, token, tmp_path):
    FlakyProxy.fail = 0
    FlakyProxy.refuse_packed = True
    run = tl.start_run(experiment="old-server", url=flaky, token=token, spool_dir=tmp_path / "s", batch_size=100,
                       flush_interval=0.05)  # fmt: skip
    for step in range(250):
        run.log_metrics({"loss": float(step), "nan": float("nan")}, step=step)
    run.finish()
    assert [s for s, _ in history(run.id, "loss")] == list(range(250))
    assert history(run.id, "nan")[:2] == [(0, None), (1, None)]
    # One packed attempt refused; the refused batch and every later one went as JSON (remembered for the session).
    assert FlakyProxy.content_types[0] == wire.CONTENT_TYPE and run.transport.packed_metrics is False
    assert set(FlakyProxy.content_types[1:]) == {"application/json"} and len(FlakyProxy.content_types) >= 6
    assert not list((tmp_path / "s").glob("*.jsonl")) and run.stats["refused"] == 0


def test_it_replays_a_spool_written_by_the_json_client_and_by_this_one(live_server, token, tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    run_id = "5f0c3d1e-0000-4000-8000-000000000001"
    old_entries = [  # exactly what the client wrote before the packed format
        {"op": "create_run", "run_id": run_id, "server": live_server.url,
         "body": {"id": run_id, "name": "old", "params": {}, "tags": {}, "experiment": "replayed"}},
        {"op": "metrics", "run_id": run_id, "server": live_server.url, "idempotency_key": "old-batch-1",
         "points": [["loss", 0.5, 0, 1700000000.0, None], ["loss", "NaN", 1, 1700000001.0, 1.0]]},
    ]  # fmt: skip
    (spool / "00000000000000000001-1-old.jsonl").write_text("".join(json.dumps(e) + "\n" for e in old_entries))
    down = tl.Run(run_id, Transport(f"http://127.0.0.1:{free_port()}"), spool_dir=spool, flush_interval=0.05,
                  replay_on_start=False)  # fmt: skip
    down.transport.backoff = 0.001
    for step in range(2, 500):
        down.log_metric("loss", float(step), step=step)
    down.close(timeout=5)
    spooled = [json.loads(line) for f in sorted(spool.glob("*.jsonl")) for line in f.read_text().splitlines()]
    assert any("packed" in e for e in spooled)  # this client spools packed batches
    assert tl.sync(spool, url=live_server.url, token=token) == (len(spooled), 0, 0)
    assert [s for s, _ in history(run_id, "loss")] == list(range(500))
    assert history(run_id, "loss")[1] == (1, None)
    # Replaying the same entries again stores nothing twice (idempotency keys).
    (spool / "00000000000000000001-1-old.jsonl").write_text("".join(json.dumps(e) + "\n" for e in spooled))
    assert tl.sync(spool, url=live_server.url, token=token) == (len(spooled), 0, 0)
    assert MetricPoint.objects.filter(series__run_id=run_id).count() == 500


def test_it_refuses_bad_metric_arguments_clearly_and_queues_nothing(live_server, token, tmp_path):
    run = tl.start_run(experiment="bad-args", url=live_server.url, token=token, spool_dir=tmp_path / "s")
    run.log_metric("loss", 1.0, step=5)
    bad = [
        lambda: run.log_metric("", 1.0),
        lambda: run.log_metric(7, 1.0),
        lambda: run.log_metric("loss", "high"),
        lambda: run.log_metric("loss", None),
        lambda: run.log_metric("loss", 1.0, epoch=[1]),
        lambda: run.log_metrics({"loss": None}),
        lambda: run.log_metric("loss", 1.0, step=-3),
        lambda: run.log_metric("loss", 1.0, step=2**63),
        lambda: run.log_metric("loss", 1.0, step=2.5),
        lambda: run.log_metric("loss", 1.0, step="x"),
        lambda: run.log_metric("loss", 1.0, epoch="first"),
        lambda: run.log_metrics({"loss": 1.0}, step=-1),
        lambda: run.log_metrics({"loss": 1.0}, step=1.5),
        lambda: run.log_metrics({"loss": 1.0}, epoch="x"),
    ]
    for call in bad:
        with pytest.raises(ValueError):
            call()
    assert run._sender.buffered == 1
    run.log_metric("loss", 2.0)  # auto step: one past the highest, unaffected by the refused calls
    run.log_metric("loss", 3.0, step=7.0)  # an integral float is a step
    run.finish()
    assert history(run.id, "loss") == [(5, 1.0), (6, 2.0), (7, 3.0)]


def test_it_keeps_points_of_concurrent_logging_threads_apart(live_server, token, tmp_path):
    run = tl.start_run(experiment="threads", url=live_server.url, token=token, spool_dir=tmp_path / "s",
                       batch_size=700, flush_interval=0.01)  # fmt: skip

    def log(name):
        for step in range(3000):
            run.log_metric(name, float(step), step=step, epoch=-float(step))
            run.log_metrics({f"{name}/a": float(step), f"{name}/b": -float(step)}, step=step)

    threads = [threading.Thread(target=log, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.finish()
    for i in range(4):
        assert history(run.id, f"t{i}") == [(s, float(s)) for s in range(3000)]
        assert history(run.id, f"t{i}/b") == [(s, -float(s)) for s in range(3000)]
    epochs = MetricPoint.objects.filter(series__run_id=run.id, series__key="t0").values_list("step", "epoch")
    assert all(epoch == -step for step, epoch in epochs)


def test_it_spools_the_buffer_at_exit_even_when_a_take_was_interrupted(tmp_path):
    # A SIGTERM handler that runs close() while this thread is inside a spill holds the buffer's lock:
    # close must not wait for it forever, and loses nothing.
    run = tl.Run("00000000-0000-4000-8000-000000000002", Transport(f"http://127.0.0.1:{free_port()}"),
                 spool_dir=tmp_path, replay_on_start=False, batch_size=100, flush_interval=60)  # fmt: skip
    run._sender.closing = True
    run._sender.wake.set()
    run._sender.join(5)  # the thread is gone: what is logged now stays in the buffer
    for step in range(250):
        run.log_metric("loss", float(step), step=step)
    run._sender._take_lock.acquire()
    started = time.monotonic()
    run.close(timeout=0)
    assert time.monotonic() - started < 10
    entries = [json.loads(line) for f in tmp_path.glob("*.jsonl") for line in f.read_text().splitlines()]
    packed = [wire.decode_points(base64.b64decode(e["packed"])) for e in entries]
    assert sorted(step for p in packed for step in p.step) == list(range(250))
    assert all(len(p) <= 100 for p in packed)  # still within the batch size (the server's limit)
