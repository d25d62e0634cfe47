"""The job launch form: every bad input is a form error with nothing stored or enqueued; a good one queues a run."""

import io
import shutil
import stat
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rq import Queue

from jobs.models import ComputeCluster, Environment, Job
from tracker.models import Artifact, Experiment, Run, RunStatus


@pytest.fixture
def cluster(workspace):
    return ComputeCluster.objects.create(workspace=workspace, name="cpu", max_nodes=2)


def url(workspace):
    return f"/w/{workspace.slug}/jobs/new"


def zip_upload(members, name="src.zip"):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for member in members:
            info = zipfile.ZipInfo(member[0])
            if len(member) > 2:
                info.external_attr = member[2] << 16
            zf.writestr(info, member[1])
    return SimpleUploadedFile(name, buf.getvalue(), content_type="application/zip")


def form_data(exp, clu, **overrides):
    data = {
        "token": "tok-" + "a" * 20,
        "experiment": str(exp.pk),
        "run_name": "first",
        "source_kind": "example",
        "example_name": "digits",
        "entry_script": "train.py",
        "script_args_name": ["--epochs", "--lr"],
        "script_args_value": ["1", "0.01"],
        "cluster": str(clu.pk),
        "node_count": "1",
        "procs_per_node": "1",
        "backend": "gloo",
        "env_vars_name": [""],
        "env_vars_value": [""],
    }
    data.update(overrides)
    return data


def queue_count(cluster, redis_conn):
    return Queue(cluster.queue_name, connection=redis_conn).count


def assert_nothing_launched(response, cluster, redis_conn, fragment):
    assert response.status_code == 400
    assert fragment in response.content.decode()
    assert Run.objects.count() == 0
    assert Job.objects.count() == 0
    assert queue_count(cluster, redis_conn) == 0


def test_it_shows_the_form_to_a_contributor(login, contributor, workspace, experiment, cluster):
    response = login(contributor).get(url(workspace))
    assert response.status_code == 200
    body = response.content.decode()
    assert 'name="token"' in body
    assert "Digits CNN" in body and "ResNet-18" in body
    assert f'<option value="{cluster.pk}"' in body and "cpu (local, up to 2 nodes, CPU only)" in body
    assert 'name="script_args_name" value="--epochs"' in body  # the example's default params as rows
    assert "js/jobs_form.js" in body


def test_it_refuses_readers_with_403_and_outsiders_with_404(client, login, reader, outsider, workspace, experiment, cluster):
    assert login(reader).get(url(workspace)).status_code == 403
    assert client.post(url(workspace), form_data(experiment, cluster)).status_code == 403
    assert login(outsider).get(url(workspace)).status_code == 404
    assert client.post(url(workspace), form_data(experiment, cluster)).status_code == 404
    assert Run.objects.count() == 0


def test_it_queues_the_digits_example_on_the_cluster(login, contributor, workspace, experiment, cluster, redis_conn,
                                                      django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = login(contributor).post(url(workspace), form_data(experiment, cluster))
    run = Run.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/runs/{run.pk}/"
    assert run.status == RunStatus.QUEUED and run.name == "first" and run.created_by == contributor
    job = run.job
    assert job.source_kind == "example" and job.example_name == "digits" and job.entry_script == "train.py"
    assert job.script_args == ["--epochs", "1", "--lr", "0.01"]
    assert job.cluster == cluster and job.node_count == 1
    assert queue_count(cluster, redis_conn) == 1


def test_it_makes_one_run_when_the_same_form_is_submitted_twice(login, contributor, workspace, experiment, cluster,
                                                                 redis_conn, django_capture_on_commit_callbacks):
    client = login(contributor)
    with django_capture_on_commit_callbacks(execute=True):
        first = client.post(url(workspace), form_data(experiment, cluster))
        second = client.post(url(workspace), form_data(experiment, cluster))
    assert first.status_code == second.status_code == 302
    assert first["Location"] == second["Location"]
    assert Run.objects.count() == 1
    assert queue_count(cluster, redis_conn) == 1


def test_it_creates_a_new_experiment_by_name(login, contributor, workspace, experiment, cluster, redis_conn,
                                             django_capture_on_commit_callbacks):
    data = form_data(experiment, cluster, experiment="", new_experiment="resnet <b>sweep</b>")
    with django_capture_on_commit_callbacks(execute=True):
        response = login(contributor).post(url(workspace), data)
    assert response.status_code == 302
    created = Experiment.objects.get(name="resnet <b>sweep</b>")
    assert Run.objects.get().experiment == created


def test_it_requires_an_experiment(login, contributor, workspace, experiment, cluster, redis_conn):
    response = login(contributor).post(url(workspace), form_data(experiment, cluster, experiment=""))
    assert_nothing_launched(response, cluster, redis_conn, "Choose an experiment or name a new one")


def test_it_passes_params_verbatim_as_argv(login, contributor, workspace, experiment, cluster, redis_conn,
                                           django_capture_on_commit_callbacks):
    data = form_data(experiment, cluster, script_args_name=["--note", "verbose", "seed"],
                     script_args_value=["; rm -rf / $(id) `x`", "", "7"])
    with django_capture_on_commit_callbacks(execute=True):
        login(contributor).post(url(workspace), data)
    assert Job.objects.get().script_args == ["--note", "; rm -rf / $(id) `x`", "--verbose", "--seed", "7"]


def test_it_refuses_a_param_row_without_a_name(login, contributor, workspace, experiment, cluster, redis_conn):
    data = form_data(experiment, cluster, script_args_name=["", "--x y"], script_args_value=["1", "2"])
    response = login(contributor).post(url(workspace), data)
    assert_nothing_launched(response, cluster, redis_conn, "has no parameter name")
    assert "is not a parameter name" in response.content.decode()


def test_it_queues_an_uploaded_zip_with_its_entry_script(login, contributor, workspace, experiment, cluster, redis_conn,
                                                         django_capture_on_commit_callbacks):
    upload = zip_upload([("src/train.py", b"print('hi')"), ("src/util.py", b"")])
    data = form_data(experiment, cluster, source_kind="upload", source_file=upload, entry_script="src/train.py")
    with django_capture_on_commit_callbacks(execute=True):
        response = login(contributor).post(url(workspace), data)
    assert response.status_code == 302
    job = Job.objects.get()
    assert job.source_kind == "upload" and job.source_filename == "src.zip" and job.source_blob_key
    assert queue_count(cluster, redis_conn) == 1


def test_it_refuses_an_entry_script_that_is_not_in_the_archive(login, contributor, workspace, experiment, cluster, redis_conn):
    upload = zip_upload([("src/train.py", b"print('hi')")])
    data = form_data(experiment, cluster, source_kind="upload", source_file=upload, entry_script="train.py")
    response = login(contributor).post(url(workspace), data)
    assert_nothing_launched(response, cluster, redis_conn, "train.py is not in the source. Python files in it: src/train.py")


def test_it_refuses_an_entry_script_that_is_not_in_the_example(login, contributor, workspace, experiment, cluster, redis_conn):
    response = login(contributor).post(url(workspace), form_data(experiment, cluster, entry_script="main.py"))
    assert_nothing_launched(response, cluster, redis_conn, "main.py is not in the source")


@pytest.mark.parametrize(
    "members, fragment",
    [
        ([("train.py", b""), ("../x", b"evil")], "leaves the archive"),
        ([("train.py", b""), ("/etc/cron.d/x", b"evil")], "absolute path"),
        ([("train.py", b""), ("link", b"/etc/passwd", stat.S_IFLNK | 0o777)], "symbolic link"),
    ],
)
def test_it_refuses_an_archive_with_a_member_that_could_escape(login, contributor, workspace, experiment, cluster,
                                                               redis_conn, members, fragment):
    data = form_data(experiment, cluster, source_kind="upload", source_file=zip_upload(members))
    response = login(contributor).post(url(workspace), data)
    assert_nothing_launched(response, cluster, redis_conn, fragment)


def test_it_refuses_an_archive_over_the_limits(login, contributor, workspace, experiment, cluster, redis_conn, monkeypatch):
    client = login(contributor)
    monkeypatch.setenv("TORCHLIGHT_SOURCE_MAX_MEMBERS", "3")
    upload = zip_upload([(f"f{i}.py", b"") for i in range(4)])
    response = client.post(url(workspace), form_data(experiment, cluster, source_kind="upload", source_file=upload))
    assert_nothing_launched(response, cluster, redis_conn, "more than 3 members")
    monkeypatch.setenv("TORCHLIGHT_SOURCE_MAX_BYTES", "1000")
    upload = zip_upload([("train.py", b"#" * 1001)])
    response = client.post(url(workspace), form_data(experiment, cluster, source_kind="upload", source_file=upload))
    assert_nothing_launched(response, cluster, redis_conn, "unpacks to more than the limit")


def test_it_refuses_a_file_that_is_not_a_source(login, contributor, workspace, experiment, cluster, redis_conn):
    upload = SimpleUploadedFile("model.exe", b"MZ")
    response = login(contributor).post(url(workspace), form_data(experiment, cluster, source_kind="upload", source_file=upload))
    assert_nothing_launched(response, cluster, redis_conn, "is not a source")


def test_it_asks_for_an_upload_when_the_source_is_upload(login, contributor, workspace, experiment, cluster, redis_conn):
    response = login(contributor).post(url(workspace), form_data(experiment, cluster, source_kind="upload"))
    assert_nothing_launched(response, cluster, redis_conn, "Upload a .py file or a .zip/.tar.gz folder")


def test_it_refuses_more_nodes_than_the_cluster_has(login, contributor, workspace, experiment, cluster, redis_conn):
    response = login(contributor).post(url(workspace), form_data(experiment, cluster, node_count="3"))
    assert_nothing_launched(response, cluster, redis_conn, "above the cluster&#x27;s maximum of 2 nodes")


@pytest.mark.parametrize("name", ["LD_PRELOAD", "PYTHONPATH", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "TORCHLIGHT_TOKEN"])
def test_it_refuses_forbidden_environment_variables(login, contributor, workspace, experiment, cluster, redis_conn, name):
    data = form_data(experiment, cluster, env_vars_name=[name], env_vars_value=["/tmp/evil.so"])
    response = login(contributor).post(url(workspace), data)
    assert_nothing_launched(response, cluster, redis_conn, f"{name} may not be set")


def test_it_refuses_a_malformed_environment_variable_name(login, contributor, workspace, experiment, cluster, redis_conn):
    data = form_data(experiment, cluster, env_vars_name=["1BAD NAME"], env_vars_value=["x"])
    response = login(contributor).post(url(workspace), data)
    assert_nothing_launched(response, cluster, redis_conn, "is not a valid environment variable name")


@pytest.mark.parametrize(
    "requirements, fragment",
    [
        ("-e .", "pip options"),
        ("--index-url https://evil.example/simple", "pip options"),
        ("https://evil.example/pkg.whl", "URLs and file paths"),
        ("torch @ file:///tmp/x.whl", "not allowed"),
        ("numpy >= = 1", "is not a valid requirement"),
    ],
)
def test_it_refuses_bad_pip_requirements(login, contributor, workspace, experiment, cluster, redis_conn, requirements, fragment):
    response = login(contributor).post(url(workspace), form_data(experiment, cluster, pip_requirements=requirements))
    assert_nothing_launched(response, cluster, redis_conn, fragment)
    assert Environment.objects.count() == 0


def test_it_creates_or_reuses_an_environment_from_pip_requirements(login, contributor, workspace, experiment, cluster,
                                                                   redis_conn, django_capture_on_commit_callbacks):
    client = login(contributor)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(url(workspace), form_data(experiment, cluster, pip_requirements="tqdm>=4\n# comment\n"))
        client.post(url(workspace), form_data(experiment, cluster, token="tok-" + "b" * 20, pip_requirements="tqdm>=4"))
    environment = Environment.objects.get()
    assert environment.requirement_list == ["tqdm>=4"]
    assert [job.environment for job in Job.objects.all()] == [environment, environment]


@pytest.mark.skipif(shutil.which("mpirun") is not None, reason="this machine has mpirun")
def test_it_refuses_mpi_without_mpirun(login, contributor, workspace, experiment, cluster, redis_conn):
    response = login(contributor).post(url(workspace), form_data(experiment, cluster, backend="mpi"))
    assert_nothing_launched(response, cluster, redis_conn, "mpi needs mpirun")


def test_it_refuses_nccl_without_a_gpu(login, contributor, workspace, experiment, cluster, redis_conn):
    response = login(contributor).post(url(workspace), form_data(experiment, cluster, backend="nccl"))
    assert_nothing_launched(response, cluster, redis_conn, "nccl needs GPUs")


def test_it_refuses_gpu_on_a_cluster_without_gpus(login, contributor, workspace, experiment, cluster, redis_conn):
    response = login(contributor).post(url(workspace), form_data(experiment, cluster, use_gpu="on"))
    assert_nothing_launched(response, cluster, redis_conn, "has no GPUs")


def test_it_refuses_a_cluster_of_another_workspace(login, contributor, workspace, other_workspace, experiment, cluster, redis_conn):
    foreign = ComputeCluster.objects.create(workspace=other_workspace, name="theirs")
    response = login(contributor).post(url(workspace), form_data(experiment, cluster, cluster=str(foreign.pk)))
    assert_nothing_launched(response, cluster, redis_conn, "Select a valid choice")


def test_it_refuses_a_bad_max_duration(login, contributor, workspace, experiment, cluster, redis_conn):
    response = login(contributor).post(url(workspace), form_data(experiment, cluster, max_duration_seconds="0"))
    assert_nothing_launched(response, cluster, redis_conn, "greater than or equal to 1")


def test_it_resumes_from_a_checkpoint_and_links_the_parent(login, contributor, workspace, experiment, cluster, make_run,
                                                           redis_conn, django_capture_on_commit_callbacks):
    parent = make_run(name="earlier", status=RunStatus.COMPLETED)
    checkpoint = Artifact.objects.create(run=parent, path="outputs/checkpoint.pt", size=1, sha256="0" * 64, storage_key="k1")
    Artifact.objects.create(run=parent, path="outputs/log.txt", size=1, sha256="0" * 64, storage_key="k2")
    client = login(contributor)
    body = client.get(url(workspace)).content.decode()
    assert "earlier / outputs/checkpoint.pt" in body and "log.txt" not in body
    with django_capture_on_commit_callbacks(execute=True):
        client.post(url(workspace), form_data(experiment, cluster, resume_from=str(checkpoint.pk)))
    run = Run.objects.exclude(pk=parent.pk).get()
    assert run.parent_run == parent and run.job.resume_from == checkpoint


def test_it_refuses_a_checkpoint_from_another_workspace(login, contributor, workspace, other_workspace, experiment, cluster,
                                                        redis_conn):
    other = Run.objects.create(experiment=Experiment.objects.create(workspace=other_workspace, name="x"), name="theirs")
    foreign = Artifact.objects.create(run=other, path="ckpt.pt", size=1, sha256="0" * 64, storage_key="k3")
    response = login(contributor).post(url(workspace), form_data(experiment, cluster, resume_from=str(foreign.pk)))
    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()
    assert Job.objects.count() == 0


def test_it_keeps_the_run_queued_waiting_for_the_queue_when_redis_is_down(login, contributor, workspace, experiment, cluster,
                                                                          tmp_path, monkeypatch,
                                                                          django_capture_on_commit_callbacks):
    from django.conf import settings

    monkeypatch.setattr(settings, "REDIS_URL", f"unix://{tmp_path}/down.sock?db=0")
    client = login(contributor)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url(workspace), form_data(experiment, cluster))
    assert response.status_code == 302
    run = Run.objects.get()
    assert run.status == RunStatus.QUEUED and run.status_reason == "waiting for the queue"
    assert "waiting for the queue" in client.get(response["Location"]).content.decode()


def test_it_preselects_the_experiment_from_the_link(login, contributor, workspace, experiment, cluster):
    body = login(contributor).get(url(workspace) + f"?experiment={experiment.pk}").content.decode()
    assert f'<option value="{experiment.pk}" selected>' in body


def test_it_keeps_a_good_upload_when_another_field_is_wrong(login, contributor, workspace, experiment, cluster, redis_conn,
                                                            django_capture_on_commit_callbacks):
    client = login(contributor)
    upload = zip_upload([("train.py", b"print('hi')")], name="mine.zip")
    response = client.post(url(workspace), form_data(experiment, cluster, source_kind="upload", source_file=upload,
                                                     node_count="9"))
    assert_nothing_launched(response, cluster, redis_conn, "maximum of 2 nodes")
    body = response.content.decode()
    assert "Using <span class=\"mono\">mine.zip</span> that you uploaded" in body
    source_id = body.split('name="source_id" value="')[1].split('"')[0]
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url(workspace), form_data(experiment, cluster, source_kind="upload", source_id=source_id))
    assert response.status_code == 302
    assert Job.objects.get().source_filename == "mine.zip"
