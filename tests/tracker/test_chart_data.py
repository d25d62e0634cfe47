import math

import pytest

from tracker import metric_store


def ingest_series(run, key, values, start=0, t0=1000.0):
    for i in range(0, len(values), 50_000):
        chunk = values[i : i + 50_000]
        metric_store.ingest(
            run,
            [{"key": key, "value": v, "step": start + i + j, "timestamp": t0 + i + j, "epoch": (i + j) // 100}
             for j, v in enumerate(chunk)],
        )


@pytest.mark.django_db
def test_it_downsamples_a_long_series_keeping_spikes_and_is_deterministic(login, owner, run):
    values = [math.sin(i / 300) for i in range(120_000)]
    values[77_777] = 42.0
    values[12_345] = -42.0
    values[99_000] = "NaN"
    ingest_series(run, "loss", values)
    client = login(owner)
    first = client.get(f"/runs/{run.id}/metrics/loss.json?points=1000").json()
    again = client.get(f"/runs/{run.id}/metrics/loss.json?points=1000").json()
    assert first == again
    assert first["total_points"] == 120_000 and first["downsampled"]
    assert first["returned_points"] <= 1100 and first["returned_points"] == len(first["x"]) == len(first["y"])
    assert 42.0 in first["y"] and -42.0 in first["y"]
    assert [n["step"] for n in first["nonfinite"]] == [99_000] and first["nonfinite"][0]["value"] == "NaN"
    assert first["x"] == sorted(first["x"])


@pytest.mark.django_db
def test_it_returns_full_resolution_for_a_zoomed_range(login, owner, run):
    ingest_series(run, "loss", [float(i % 7) for i in range(60_000)])
    client = login(owner)
    body = client.get(f"/runs/{run.id}/metrics/loss.json?points=2000&from=30000&to=31499").json()
    assert body["total_points"] == 1500 and body["returned_points"] == 1500 and not body["downsampled"]
    assert body["x"][0] == 30000 and body["x"][-1] == 31499
    wider = client.get(f"/runs/{run.id}/metrics/loss.json?points=2000&from=30000&to=39999").json()
    assert wider["total_points"] == 10_000 and wider["returned_points"] <= 2000
    assert min(wider["x"]) >= 30000 and max(wider["x"]) <= 39999
    assert set(wider["y"]) == {0.0, 6.0}  # each bucket keeps its min and max


@pytest.mark.django_db
def test_it_returns_only_new_points_since_a_step(login, owner, run):
    ingest_series(run, "loss", [1.0, 2.0, 3.0, 4.0])
    body = login(owner).get(f"/runs/{run.id}/metrics/loss.json?since=1").json()
    assert body["steps"] == [2, 3] and body["y"] == [3.0, 4.0] and body["live"] is True and body["last_step"] == 3
    assert login(owner).get(f"/runs/{run.id}/metrics/loss.json?since=3").json()["x"] == []


@pytest.mark.django_db
def test_it_uses_time_and_epoch_as_x(login, owner, run):
    ingest_series(run, "loss", [float(i) for i in range(1000)])
    client = login(owner)
    body = client.get(f"/runs/{run.id}/metrics/loss.json?x=time&from=1100&to=1199").json()
    assert body["x"][0] == 1100.0 and body["x"][-1] == 1199.0 and body["total_points"] == 100
    body = client.get(f"/runs/{run.id}/metrics/loss.json?x=epoch&from=3&to=4").json()
    assert body["steps"][0] == 300 and body["steps"][-1] == 499


@pytest.mark.django_db
def test_it_marks_nan_and_infinities_instead_of_dropping_them(login, owner, run):
    ingest_series(run, "x", [1.0, "NaN", "Infinity", "-Infinity", 2.0])
    body = login(owner).get(f"/runs/{run.id}/metrics/x.json").json()
    assert body["y"] == [1.0, None, None, None, 2.0]
    assert [n["value"] for n in body["nonfinite"]] == ["NaN", "Infinity", "-Infinity"]


@pytest.mark.django_db
def test_it_answers_bad_chart_parameters_with_400(login, owner, run):
    client = login(owner)
    for query in ("x=banana", "points=1", "points=abc", "from=5&to=1", "since=1.5", "from=nan"):
        r = client.get(f"/runs/{run.id}/metrics/loss.json?{query}")
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_parameter", query


@pytest.mark.django_db
def test_it_hides_charts_from_non_members(login, outsider, run):
    client = login(outsider)
    assert client.get(f"/runs/{run.id}/metrics/loss.json").status_code == 404
    assert client.get(f"/runs/{run.id}/metrics/loss.csv").status_code == 404


@pytest.mark.django_db
def test_it_shows_charts_to_readers_and_404s_unknown_runs(login, reader, run, make_run):
    ingest_series(run, "loss", [1.0, 2.0])
    client = login(reader)
    body = client.get(f"/runs/{run.id}/metrics/loss.json").json()
    assert body["y"] == [1.0, 2.0] and body["live"] is True
    missing = client.get(f"/runs/{run.id}/metrics/nope.json").json()
    assert missing["x"] == [] and missing["series_points"] == 0
    ended = make_run(name="done", status="completed")
    assert client.get(f"/runs/{ended.id}/metrics/loss.json").json()["live"] is False
    assert client.get("/runs/00000000-0000-0000-0000-000000000000/metrics/loss.json").status_code == 404
    assert client.get(f"/runs/{'-' * 36}/metrics/loss.json").status_code == 404


@pytest.mark.django_db
def test_it_streams_the_full_history_as_csv(login, owner, run):
    ingest_series(run, "val/loss", [0.5, "NaN", "Infinity", 0.25] * 3000)
    r = login(owner).get(f"/runs/{run.id}/metrics/val/loss.csv")
    assert r.status_code == 200 and r.streaming and r["Content-Type"] == "text/csv"
    lines = b"".join(r.streaming_content).decode().splitlines()
    assert lines[0] == "step,value,timestamp,epoch" and len(lines) == 12_001
    assert lines[1].startswith("0,0.5,") and lines[2].split(",")[1] == "NaN" and lines[3].split(",")[1] == "Infinity"
    assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(12_000))
