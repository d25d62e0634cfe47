"""Jobs REST API: submit (same checks as the form), inspect, cancel, logs, clusters, source uploads."""

import io
import json
import zipfile

import pytest
from rq import Queue

from jobs.models import ComputeCluster, Job, write_log
from tracker.models import ApiToken, Run, RunStatus


@pytest.fixture
def cluster(workspace):
    return ComputeCluster.objects.create(workspace=workspace, name="cpu", max_nodes=2)


@pytest.fixture
def api(client):
    def _api(user, method, path, body=None, raw=None, content_type="application/json", token=None):
        raw_token = token or ApiToken.mint(user, "test")[1]
        headers = {"HTTP_AUTHORIZATION": f"Bearer {raw_token}"}
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        call = getattr(client, method.lower())
        if data is None:
            return call(path, **headers)
        return call(path, data=data, content_type=content_type, **headers)

    return _api


def submit(api, user, **body):
    payload = {"experiment": "mnist-baseline", "cluster": "cpu", "example": "digits", "params": {"--epochs": "1"}}
    payload.update(body)
    return api(user, "POST", "/api/v1/jobs", payload)


def zip_bytes(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def test_it_submits_an_example_job(api, contributor, experiment, cluster, redis_conn, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = submit(api, contributor, nodes=2, env={"MY_FLAG": "1"}, max_duration=120, run_name="api-run")
    assert response.status_code == 201, response.content
    data = response.json()
    run = Run.objects.get(pk=data["id"])
    assert run.status == RunStatus.QUEUED and run.name == "api-run"
    assert data["args"] == ["--epochs", "1"] and data["nodes"] == 2 and data["env"] == {"MY_FLAG": "1"}
    assert data["url"].endswith(f"/runs/{run.pk}/")
    assert Queue(cluster.queue_name, connection=redis_conn).count == 2


def test_it_makes_one_job_for_a_repeated_idempotency_key(api, contributor, experiment, cluster, redis_conn,
                                                         django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        first = submit(api, contributor, idempotency_key="retry-1234567")
        second = submit(api, contributor, idempotency_key="retry-1234567")
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert Job.objects.count() == 1


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        ({"nodes": 5}, 400, "above the cluster's maximum"),
        ({"env": {"LD_PRELOAD": "x.so"}}, 400, "LD_PRELOAD may not be set"),
        ({"pip": ["-e ."]}, 400, "pip options"),
        ({"backend": "nccl"}, 400, "nccl needs GPUs"),
        ({"entry": "nope.py"}, 400, "nope.py is not in the source"),
        ({"cluster": "missing"}, 400, "no cluster 'missing'"),
        ({"example": None}, 400, "give example"),
        ({"example": "digits", "source_id": "x"}, 400, "not both"),
        ({"source_id": "forged", "example": None}, 400, "Unknown source id"),
        ({"gpu": "yes"}, 400, "gpu must be true or false"),
        ({"params": 5}, 400, "params must be"),
        ({"surprise": 1}, 400, "unknown field(s): surprise"),
        ({"idempotency_key": "a:b"}, 400, "idempotency_key: The submission token must be 8 to 64"),
    ],
)
def test_it_refuses_bad_submissions_with_json_errors(api, contributor, experiment, cluster, redis_conn, body, status, fragment):
    response = submit(api, contributor, **body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == "invalid" and fragment in error["message"] + json.dumps(error.get("details"))
    assert Run.objects.count() == 0
    assert Queue(cluster.queue_name, connection=redis_conn).count == 0


def test_it_refuses_readers_outsiders_sessions_and_run_tokens(api, client, reader, outsider, contributor, experiment,
                                                              cluster, run, redis_conn):
    assert submit(api, reader).status_code == 403
    assert submit(api, outsider, workspace="vision").status_code == 404
    client.force_login(contributor)
    assert client.post("/api/v1/jobs", data="{}", content_type="application/json").status_code == 401
    run_token = ApiToken.mint(contributor, "run", run=run)[1]
    assert api(contributor, "POST", "/api/v1/jobs", {"experiment": "x"}, token=run_token).status_code == 403
    assert Job.objects.count() == 0


def test_it_shows_cancels_and_logs_a_job(api, contributor, reader, outsider, experiment, cluster, redis_conn,
                                         django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run_id = submit(api, contributor).json()["id"]
    detail = api(reader, "GET", f"/api/v1/jobs/{run_id}").json()
    assert detail["status"] == "queued" and detail["node_status"][0]["status"] == "pending"
    assert api(outsider, "GET", f"/api/v1/jobs/{run_id}").status_code == 404
    write_log(run_id, [{"node_rank": 0, "rank": 0, "text": "hello"}, {"node_rank": 0, "rank": 0, "text": "world"}])
    logs = api(reader, "GET", f"/api/v1/runs/{run_id}/logs?after=0&limit=1").json()
    assert [x["text"] for x in logs["lines"]] == ["hello"] and logs["more"] is True
    rest = api(reader, "GET", f"/api/v1/runs/{run_id}/logs?after={logs['next_offset']}").json()
    assert [x["text"] for x in rest["lines"]] == ["world"]
    assert api(reader, "GET", f"/api/v1/runs/{run_id}/logs?after=abc").status_code == 400
    assert api(reader, "POST", f"/api/v1/jobs/{run_id}/cancel", {}).status_code == 403
    canceled = api(contributor, "POST", f"/api/v1/jobs/{run_id}/cancel", {})
    assert canceled.status_code == 202 and canceled.json()["status"] == "canceled"
    assert api(contributor, "POST", f"/api/v1/jobs/{run_id}/cancel", {}).status_code == 409
    assert Queue(cluster.queue_name, connection=redis_conn).count == 0


def test_it_uploads_a_source_and_submits_it(api, contributor, experiment, cluster, redis_conn,
                                            django_capture_on_commit_callbacks):
    raw = zip_bytes([("proj/train.py", "print('hi')"), ("proj/lib.py", "")])
    response = api(contributor, "POST", "/api/v1/sources?filename=proj.zip", raw=raw, content_type="application/octet-stream")
    assert response.status_code == 201, response.content
    source = response.json()
    assert source["files"] == ["proj/lib.py", "proj/train.py"] and source["filename"] == "proj.zip"
    with django_capture_on_commit_callbacks(execute=True):
        job = submit(api, contributor, example=None, source_id=source["id"], entry="proj/train.py")
    assert job.status_code == 201, job.content
    assert job.json()["source"] == {"kind": "upload", "example": None, "filename": "proj.zip"}
    # Someone else cannot use that id.
    other = submit(api, experiment.created_by, example=None, source_id=source["id"], entry="proj/train.py")
    assert other.status_code == 400 and "Unknown source id" in other.json()["error"]["message"]


@pytest.mark.parametrize(
    "filename, raw, status, fragment",
    [
        ("evil.zip", None, 400, "leaves the archive"),
        ("x.exe", b"MZ", 400, "is not a source"),
        ("", b"print(1)", 400, "is not a source"),
        ("train.py", b"", 400, "body is empty"),
    ],
)
def test_it_refuses_bad_source_uploads(api, contributor, workspace, filename, raw, status, fragment):
    if raw is None:
        raw = zip_bytes([("train.py", ""), ("../../x", "evil")])
    response = api(contributor, "POST", f"/api/v1/sources?filename={filename}", raw=raw, content_type="application/octet-stream")
    assert response.status_code == status
    assert fragment in response.json()["error"]["message"]


def test_it_refuses_a_source_over_the_upload_limit(api, contributor, workspace, monkeypatch):
    monkeypatch.setenv("TORCHLIGHT_SOURCE_MAX_UPLOAD_BYTES", "100")
    response = api(contributor, "POST", "/api/v1/sources?filename=train.py", raw=b"#" * 101,
                   content_type="application/octet-stream")
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"


def test_it_lists_and_creates_clusters(api, owner, contributor, reader, workspace, cluster, redis_conn):
    listed = api(reader, "GET", "/api/v1/clusters").json()["clusters"]
    assert [c["name"] for c in listed] == ["cpu"] and listed[0]["queue_depth"] == 0
    assert listed[0]["nodes"] == {"busy": 0, "idle": 0, "unreachable": 0}
    body = {"name": "gpu", "kind": "external", "gpus_per_node": 2, "gpu_type": "A100", "max_nodes": 4}
    assert api(contributor, "POST", "/api/v1/clusters", body).status_code == 403
    created = api(owner, "POST", "/api/v1/clusters", body)
    assert created.status_code == 201 and created.json()["queue"].startswith("torchlight.cluster.")
    bad = api(owner, "POST", "/api/v1/clusters", {"name": "x", "min_nodes": 3, "max_nodes": 1})
    assert bad.status_code == 400 and "min_nodes" in bad.json()["error"]["details"]
    assert ComputeCluster.objects.count() == 2


def test_it_lists_the_workspace_jobs_newest_first(api, contributor, reader, outsider, experiment, cluster, redis_conn):
    first = submit(api, contributor, run_name="one").json()["id"]
    second = submit(api, contributor, run_name="two").json()["id"]
    Run.objects.filter(pk=first).update(status=RunStatus.COMPLETED)
    listed = api(reader, "GET", "/api/v1/jobs").json()["jobs"]
    assert [job["id"] for job in listed] == [second, first]
    assert [job["id"] for job in api(reader, "GET", "/api/v1/jobs?live=1").json()["jobs"]] == [second]
    assert api(reader, "GET", "/api/v1/jobs?limit=0").status_code == 400
    assert api(outsider, "GET", "/api/v1/jobs?workspace=vision").status_code == 404
