import io

import pytest

from tracker import services, storage
from tracker.models import Artifact, Param, RunStatus, RunTag


@pytest.mark.django_db
def test_it_creates_a_running_run_with_params_and_tags(experiment, owner):
    run = services.create_run(experiment=experiment, user=owner, name="r", params={"lr": 0.1}, tags={"team": "a"})
    assert run.status == RunStatus.RUNNING and run.start_time and run.created_by == owner
    assert dict(run.params.values_list("key", "value")) == {"lr": "0.1"}
    assert dict(run.tags.values_list("key", "value")) == {"team": "a"}


@pytest.mark.django_db
def test_it_creates_nothing_when_a_param_is_bad(experiment, owner):
    with pytest.raises(services.InvalidInput) as exc:
        services.create_run(experiment=experiment, user=owner, params={"p": "x" * 9000})
    assert exc.value.errors[0]["code"] == "param_too_long"
    assert not experiment.runs.exists()


@pytest.mark.django_db
def test_it_keeps_params_immutable_and_reports_each_bad_one(run):
    assert services.log_params(run, {"lr": 0.1, "bs": 32}) == []
    errors = services.log_params(run, {"lr": 0.1, "bs": 64, "k" * 251: 1, "big": "x" * 8193, "ok": "yes"})
    assert {e["code"] for e in errors} == {"param_conflict", "key_too_long", "param_too_long"}
    assert dict(Param.objects.filter(run=run).values_list("key", "value")) == {"lr": "0.1", "bs": "32", "ok": "yes"}


@pytest.mark.django_db
def test_it_overwrites_tags(run):
    services.set_tags(run, {"a": "1"})
    services.set_tags(run, {"a": "2", "b": "3"})
    assert dict(RunTag.objects.filter(run=run).values_list("key", "value")) == {"a": "2", "b": "3"}


@pytest.mark.django_db
@pytest.mark.parametrize("bad", ["", "/etc/passwd", "a/../../b", "..", "a\\b", "a\x00b"])
def test_it_refuses_bad_artifact_paths(run, bad):
    with pytest.raises(services.InvalidArtifactPath):
        services.store_artifact(run, bad, io.BytesIO(b"x"))
    assert not Artifact.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_it_stores_and_replaces_an_artifact(run):
    first = services.store_artifact(run, "./model/weights.bin", io.BytesIO(b"one"))
    assert first.path == "model/weights.bin" and first.size == 3
    old_key = first.storage_key
    second = services.store_artifact(run, "model/weights.bin", io.BytesIO(b"second"))
    assert second.pk == first.pk and second.size == 6
    with storage.open_blob(second.storage_key) as f:
        assert f.read() == b"second"
    assert not storage.blob_exists(old_key)


@pytest.mark.django_db
def test_it_refuses_an_artifact_over_the_limit_and_keeps_the_old_one(run):
    services.store_artifact(run, "a.txt", io.BytesIO(b"small"))
    with pytest.raises(storage.TooLarge):
        services.store_artifact(run, "a.txt", io.BytesIO(b"x" * 100), max_bytes=10)
    assert Artifact.objects.get(run=run, path="a.txt").size == 5
