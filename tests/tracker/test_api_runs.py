"""REST API v1: experiments, runs, params, tags, metrics, artifacts, tokens and errors."""

import json
import math

import pytest

from tracker.models import ApiToken, Experiment, MetricPoint, Param, Run, RunStatus


@pytest.fixture
def api(client):
    """api(user_or_raw_token) -> call(method, url, data=None, **extra) with a bearer token."""

    def _api(who, run=None):
        raw = who if isinstance(who, str) else ApiToken.mint(who, "test", run=run)[1]

        def call(method, url, data=None, content_type="application/json", **extra):
            body = json.dumps(data) if data is not None and content_type == "application/json" else data
            kwargs = {"HTTP_AUTHORIZATION": f"Bearer {raw}", **extra}
            if body is not None:
                kwargs.update(data=body, content_type=content_type)
            return getattr(client, method.lower())(url, **kwargs)

        return call

    return _api


def assert_error(response, status, code=None):
    assert response.status_code == status, response.content[:500]
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code


@pytest.mark.django_db
def test_it_creates_a_run_in_an_experiment_by_name_and_logs_to_it(api, contributor, workspace):
    call = api(contributor)
    r = call("POST", "/api/v1/runs", {"experiment": "new-exp", "name": "r1", "params": {"lr": 0.01}, "tags": {"t": "x"}})
    assert r.status_code == 201, r.content
    run = r.json()
    assert run["status"] == "running" and run["params"] == {"lr": "0.01"} and run["workspace"] == "vision"
    assert Experiment.objects.filter(workspace=workspace, name="new-exp").exists()
    rid = run["id"]
    r = call("POST", f"/api/v1/runs/{rid}/metrics", {"points": [{"key": "loss", "value": 1.0, "step": 0}], "idempotency_key": "a"})
    assert r.json() == {"stored": 1, "errors": [], "duplicate": False}
    r = call("PATCH", f"/api/v1/runs/{rid}", {"status": "completed"})
    assert r.status_code == 200 and r.json()["status"] == "completed" and r.json()["end_time"]
    assert_error(call("PATCH", f"/api/v1/runs/{rid}", {"status": "running"}), 409, "run_ended")
    detail = call("GET", f"/api/v1/runs/{rid}").json()
    assert detail["metrics"][0]["key"] == "loss" and detail["metrics"][0]["count"] == 1


@pytest.mark.django_db
def test_it_lists_creates_and_gets_experiments(api, owner, reader, experiment):
    r = api(reader)("GET", "/api/v1/experiments")
    assert [e["name"] for e in r.json()["results"]] == ["mnist-baseline"]
    assert_error(api(reader)("POST", "/api/v1/experiments", {"name": "x"}), 403, "permission_denied")
    r = api(owner)("POST", "/api/v1/experiments", {"name": "x"})
    assert r.status_code == 201
    assert_error(api(owner)("POST", "/api/v1/experiments", {"name": "x"}), 409, "already_exists")
    assert api(reader)("GET", f"/api/v1/experiments/{experiment.pk}").json()["name"] == "mnist-baseline"


@pytest.mark.django_db
def test_it_hides_other_workspaces_as_404(api, outsider, run, experiment):
    call = api(outsider)
    assert_error(call("GET", f"/api/v1/runs/{run.id}"), 404, "not_found")
    assert_error(call("POST", f"/api/v1/runs/{run.id}/metrics", {"points": []}), 404)
    assert_error(call("GET", f"/api/v1/experiments/{experiment.pk}"), 404)
    assert_error(call("POST", "/api/v1/runs", {"experiment_id": experiment.pk}), 404)
    assert_error(call("GET", "/api/v1/runs/00000000-0000-0000-0000-000000000000"), 404)


@pytest.mark.django_db
def test_it_gives_readers_403_on_writes(api, reader, run):
    assert_error(api(reader)("POST", f"/api/v1/runs/{run.id}/params", {"params": {"a": 1}}), 403, "permission_denied")
    assert not Param.objects.exists()


@pytest.mark.django_db
def test_it_needs_a_valid_token_and_ignores_sessions(client, login, owner, run):
    assert_error(client.get(f"/api/v1/runs/{run.id}"), 401, "unauthenticated")
    login(owner)
    assert_error(client.get(f"/api/v1/runs/{run.id}"), 401, "unauthenticated")
    assert_error(client.get(f"/api/v1/runs/{run.id}", HTTP_AUTHORIZATION="Bearer tl_nope"), 401, "invalid_token")
    token, raw = ApiToken.mint(owner, "x")
    token.revoke()
    assert_error(client.get(f"/api/v1/runs/{run.id}", HTTP_AUTHORIZATION=f"Bearer {raw}"), 401, "invalid_token")


@pytest.mark.django_db
def test_it_limits_run_tokens_to_their_live_run(api, owner, run, make_run):
    other = make_run(name="other")
    call = api(owner, run=run)
    ok = call("POST", f"/api/v1/runs/{run.id}/metrics", {"points": [{"key": "a", "value": 1}]})
    assert ok.status_code == 200
    assert_error(call("POST", f"/api/v1/runs/{other.id}/metrics", {"points": [{"key": "a", "value": 1}]}), 404)
    assert_error(call("GET", f"/api/v1/runs/{other.id}"), 404)
    assert_error(call("POST", "/api/v1/runs", {"experiment": "x"}), 403)
    run.finish(RunStatus.COMPLETED)
    assert_error(call("POST", f"/api/v1/runs/{run.id}/metrics", {"points": [{"key": "a", "value": 2}]}), 401, "run_ended")
    assert MetricPoint.objects.count() == 1


@pytest.mark.django_db
def test_it_refuses_non_json_bodies_with_415(api, owner, run):
    r = api(owner)("POST", f"/api/v1/runs/{run.id}/metrics", "key=a", content_type="application/x-www-form-urlencoded")
    assert_error(r, 415, "unsupported_media_type")
    assert_error(api(owner)("POST", f"/api/v1/runs/{run.id}/metrics", "{nope", content_type="application/json"), 400)


@pytest.mark.django_db
def test_it_reports_bad_metric_items_and_keeps_the_good_ones(api, owner, run):
    points = [
        {"key": "loss", "value": "abc", "step": 0},
        {"value": 1.0},
        {"key": "x" * 251, "value": 1.0},
        {"key": "loss", "value": 1.0, "step": -1},
        {"key": "loss", "value": 1.0, "step": 2**63},
        {"key": "loss", "value": "NaN", "step": 1},
        {"key": "loss", "value": "Infinity", "step": 2},
        {"key": "loss", "value": "-Infinity", "step": 3},
        {"key": "loss", "value": 0.5, "step": 4},
    ]
    body = api(owner)("POST", f"/api/v1/runs/{run.id}/metrics", {"points": points}).json()
    assert body["stored"] == 4
    assert [(e["index"], e["code"]) for e in body["errors"]] == [
        (0, "invalid_value"), (1, "missing_key"), (2, "key_too_long"), (3, "invalid_step"), (4, "invalid_step"),
    ]  # fmt: skip
    history = api(owner)("GET", f"/api/v1/runs/{run.id}/metrics/loss/history").json()
    assert [p["value"] for p in history["points"]] == ["NaN", "Infinity", "-Infinity", 0.5]


@pytest.mark.django_db
def test_it_refuses_100000_points_in_one_request_with_413(api, owner, run):
    points = [{"key": "a", "value": 1.0, "step": i} for i in range(100_000)]
    assert_error(api(owner)("POST", f"/api/v1/runs/{run.id}/metrics", {"points": points}), 413, "batch_too_large")
    assert MetricPoint.objects.count() == 0


@pytest.mark.django_db
def test_it_reports_param_conflicts_and_long_params(api, owner, run):
    call = api(owner)
    assert call("POST", f"/api/v1/runs/{run.id}/params", {"params": {"lr": "0.1"}}).json()["errors"] == []
    body = call("POST", f"/api/v1/runs/{run.id}/params", {"params": {"lr": "0.2", "big": "x" * 8193, "ok": 1}}).json()
    assert sorted(e["code"] for e in body["errors"]) == ["param_conflict", "param_too_long"] and body["stored"] == 1
    assert Param.objects.get(run=run, key="lr").value == "0.1"


@pytest.mark.django_db
def test_it_pages_metric_history_with_tokens(api, owner, run):
    call = api(owner)
    call("POST", f"/api/v1/runs/{run.id}/metrics", {"points": [{"key": "a/b", "value": i, "step": i // 2} for i in range(25)]})
    seen, token = [], None
    while True:
        url = f"/api/v1/runs/{run.id}/metrics/a/b/history?max_results=10" + (f"&page_token={token}" if token else "")
        page = call("GET", url).json()
        seen += [p["value"] for p in page["points"]]
        token = page["next_page_token"]
        if not token:
            break
    assert seen == list(range(25))
    assert_error(call("GET", f"/api/v1/runs/{run.id}/metrics/nope/history"), 404)
    assert_error(call("GET", f"/api/v1/runs/{run.id}/metrics/a/b/history?max_results=zero"), 400)


@pytest.mark.django_db
def test_it_searches_runs_with_the_filter_language_and_pages(api, owner, make_run):
    for i in range(5):
        r = make_run(name=f"r{i}")
        from tracker import metric_store

        metric_store.ingest(r, [{"key": "loss", "value": float(i), "step": 0}])
    call = api(owner)
    body = call("GET", "/api/v1/runs?filter=metrics.loss < 2&order_by=name").json()
    assert [r["name"] for r in body["results"]] == ["r0", "r1"]
    page = call("GET", "/api/v1/runs?page_size=2&order_by=name").json()
    assert [r["name"] for r in page["results"]] == ["r0", "r1"] and page["next_page"] == 2
    assert_error(call("GET", "/api/v1/runs?filter=metrics.loss <<< 2"), 400, "invalid_filter")


@pytest.mark.django_db
def test_it_uploads_lists_and_downloads_artifacts(api, owner, run):
    call = api(owner)
    r = call("PUT", f"/api/v1/runs/{run.id}/artifacts/out/model.bin", b"\x00weights", content_type="application/octet-stream")
    assert r.status_code == 201 and r.json()["size"] == 8
    listing = call("GET", f"/api/v1/runs/{run.id}/artifacts").json()["results"]
    assert [a["path"] for a in listing] == ["out/model.bin"]
    got = call("GET", f"/api/v1/runs/{run.id}/artifacts/out/model.bin")
    assert b"".join(got.streaming_content) == b"\x00weights"
    bad = call("PUT", f"/api/v1/runs/{run.id}/artifacts/a/../../etc", b"x", content_type="application/octet-stream")
    assert_error(bad, 400, "invalid_path")
    assert_error(call("GET", f"/api/v1/runs/{run.id}/artifacts/none"), 404)


@pytest.mark.django_db
def test_it_serves_chart_data_over_the_api(api, owner, run):
    from tracker import metric_store

    metric_store.ingest(run, [{"key": "loss", "value": v, "step": i} for i, v in enumerate([1.0, "NaN", 3.0])])
    body = api(owner)("GET", f"/api/v1/runs/{run.id}/metrics/loss/chart").json()
    assert body["y"] == [1.0, None, 3.0] and body["nonfinite"][0]["value"] == "NaN" and body["total_points"] == 3
    assert_error(api(owner)("GET", f"/api/v1/runs/{run.id}/metrics/loss/chart?x=bogus"), 400)


@pytest.mark.django_db
def test_it_serves_a_valid_openapi_schema_and_docs_page(client):
    schema = client.get("/api/v1/schema").json()
    assert schema["openapi"].startswith("3.1")
    from django.urls import get_resolver

    api_patterns = [p for p in get_resolver().url_patterns if str(p.pattern) == "api/v1/"][0]
    assert len(schema["paths"]) >= len(api_patterns.url_patterns) - 2  # every route but schema/docs
    try:
        from openapi_spec_validator import validate
    except ImportError:
        validate = None
    if validate:
        validate(schema)
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            assert operation["responses"], (path, method)
    page = client.get("/api/v1/docs")
    assert page.status_code == 200 and b"/api/v1/runs/{run_id}/metrics" in page.content
    assert not math.isnan(0.0)
    assert Run.objects.count() == 0


@pytest.mark.django_db
def test_it_creates_a_run_with_a_client_id_once(api, owner, outsider, experiment):
    rid = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    first = api(owner)("POST", "/api/v1/runs", {"id": rid, "experiment_id": experiment.pk, "name": "offline"})
    again = api(owner)("POST", "/api/v1/runs", {"id": rid, "experiment_id": experiment.pk, "name": "offline"})
    assert first.status_code == 201 and again.status_code == 200 and again.json()["id"] == rid
    assert Run.objects.filter(pk=rid).count() == 1
    assert_error(api(outsider)("POST", "/api/v1/runs", {"id": rid, "experiment": "x"}), 409, "id_taken")
    assert_error(api(owner)("POST", "/api/v1/runs", {"id": "nope", "experiment": "x"}), 400)


@pytest.mark.django_db
def test_it_accepts_compact_list_points(api, owner, run):
    body = api(owner)("POST", f"/api/v1/runs/{run.id}/metrics", {"points": [["a", 1.5, 3, 100.0, None], ["a", "NaN", 4]]})
    assert body.json()["stored"] == 2
    assert list(MetricPoint.objects.order_by("step").values_list("step", "value")) == [(3, 1.5), (4, None)]
