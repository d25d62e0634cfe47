"""Cluster and environment pages: lists, create/edit with validation, node states, queue depth without Redis."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from rq import Queue

from jobs.models import ClusterNode, ComputeCluster, Environment, NodeStatus


@pytest.fixture
def cluster(workspace):
    return ComputeCluster.objects.create(workspace=workspace, name="cpu", max_nodes=3, vm_size="Standard_D2")


def make_node(cluster, name, status, seconds_ago=0, **fields):
    return ClusterNode.objects.create(cluster=cluster, name=name, hostname="box", pid=123, status=status,
                                      last_heartbeat=timezone.now() - timedelta(seconds=seconds_ago), **fields)


def cluster_data(**overrides):
    data = {"name": "gpu-a100", "kind": "external", "vm_size": "NC24", "cpus_per_node": "8", "memory_gb_per_node": "64",
            "gpus_per_node": "4", "gpu_type": "A100", "min_nodes": "0", "max_nodes": "4",
            "idle_seconds_before_scaledown": "300"}
    data.update(overrides)
    return data


def test_it_lists_clusters_with_node_states_and_queue_depth(login, reader, workspace, cluster, redis_conn):
    make_node(cluster, "w-busy", NodeStatus.BUSY)
    make_node(cluster, "w-idle", NodeStatus.IDLE)
    make_node(cluster, "w-stale", NodeStatus.IDLE, seconds_ago=3600)
    make_node(cluster, "w-gone", NodeStatus.UNREACHABLE)
    Queue(cluster.queue_name, connection=redis_conn).enqueue("builtins.print", "x")
    response = login(reader).get(f"/w/{workspace.slug}/clusters/")
    assert response.status_code == 200
    row = response.content.decode().split('<table class="data" id="clusters">')[1]
    cells = [c.split("</td>")[0].strip() for c in row.split('<td class="num">')[1:]]
    assert cells[:4] == ["1", "1", "2", "1"]  # busy, idle, unreachable (stale heartbeat counts), queued
    assert "Standard_D2" in row
    assert "New cluster" not in response.content.decode()  # readers do not get the create button


def test_it_keeps_the_list_queries_constant(login, reader, workspace, django_assert_max_num_queries, redis_conn):
    for i in range(6):
        c = ComputeCluster.objects.create(workspace=workspace, name=f"c{i}")
        make_node(c, f"w{i}", NodeStatus.IDLE)
    client = login(reader)
    with django_assert_max_num_queries(8):
        assert client.get(f"/w/{workspace.slug}/clusters/").status_code == 200


def test_it_says_queue_unavailable_when_redis_is_down(login, reader, workspace, cluster, tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "REDIS_URL", f"unix://{tmp_path}/nothing.sock?db=0")
    client = login(reader)
    response = client.get(f"/w/{workspace.slug}/clusters/")
    assert response.status_code == 200 and "queue unavailable" in response.content.decode()
    response = client.get(f"/w/{workspace.slug}/clusters/{cluster.pk}/")
    assert response.status_code == 200 and "queue unavailable" in response.content.decode()


def test_it_shows_a_cluster_with_its_nodes_and_recent_runs(login, reader, workspace, cluster, redis_conn, owner, experiment):
    from jobs.services import submit_job

    job = submit_job(user=owner, experiment=experiment, cluster=cluster, entry_script="train.py", source_kind="example",
                     example_name="digits", run_name="<i>night</i> run")
    make_node(cluster, "worker-<b>1</b>", NodeStatus.BUSY, current_job=job)
    make_node(cluster, "worker-2", NodeStatus.BUSY, seconds_ago=3600)
    body = login(reader).get(f"/w/{workspace.slug}/clusters/{cluster.pk}/").content.decode()
    assert "worker-&lt;b&gt;1&lt;/b&gt;" in body and "<b>1</b>" not in body
    assert "&lt;i&gt;night&lt;/i&gt; run" in body
    assert "node-busy" in body and "node-unreachable" in body  # a stale heartbeat shows as unreachable
    assert f"torchlight.cluster.{cluster.pk}" in body
    assert f"python manage.py worker --cluster cpu --workspace {workspace.slug}" in body


def test_it_hides_clusters_from_outsiders(login, outsider, workspace, cluster):
    client = login(outsider)
    assert client.get(f"/w/{workspace.slug}/clusters/").status_code == 404
    assert client.get(f"/w/{workspace.slug}/clusters/{cluster.pk}/").status_code == 404
    assert client.get(f"/w/other/clusters/{cluster.pk}/").status_code == 404  # not in that workspace


def test_it_offers_new_cluster_to_owners_and_run_a_job_to_contributors(login, owner, contributor, workspace, cluster,
                                                                       redis_conn):
    owner_page = login(owner).get(f"/w/{workspace.slug}/clusters/").content.decode()
    assert "New cluster" in owner_page and "Run a job" in owner_page
    contributor_page = login(contributor).get(f"/w/{workspace.slug}/clusters/").content.decode()
    assert "New cluster" not in contributor_page and "Run a job" in contributor_page


def test_it_lets_owners_create_a_cluster(login, owner, workspace):
    response = login(owner).post(f"/w/{workspace.slug}/clusters/new", cluster_data())
    created = ComputeCluster.objects.get(name="gpu-a100")
    assert response.status_code == 302 and response["Location"] == f"/w/{workspace.slug}/clusters/{created.pk}/"
    assert (created.gpus_per_node, created.max_nodes, created.kind, created.workspace) == (4, 4, "external", workspace)


def test_it_refuses_cluster_changes_by_contributors_and_readers(login, contributor, reader, workspace, cluster):
    for user in (contributor, reader):
        client = login(user)
        assert client.get(f"/w/{workspace.slug}/clusters/new").status_code == 403
        assert client.post(f"/w/{workspace.slug}/clusters/new", cluster_data()).status_code == 403
        assert client.post(f"/w/{workspace.slug}/clusters/{cluster.pk}/edit", cluster_data()).status_code == 403
    assert ComputeCluster.objects.count() == 1


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"min_nodes": "3", "max_nodes": "2"}, "cannot be above max nodes"),
        ({"max_nodes": "0"}, "at least 1"),
        ({"cpus_per_node": "0"}, "at least 1 CPU"),
        ({"memory_gb_per_node": "-1"}, "must be positive"),
        ({"gpus_per_node": "-2"}, "greater than or equal to 0"),
        ({"name": "has space"}, "Use letters"),
        ({"name": "cpu"}, "already a cluster called cpu"),
        ({"gpus_per_node": "0", "gpu_type": "A100"}, "needs at least 1 GPU"),
    ],
)
def test_it_refuses_a_bad_cluster(login, owner, workspace, cluster, overrides, fragment):
    response = login(owner).post(f"/w/{workspace.slug}/clusters/new", cluster_data(**overrides))
    assert response.status_code == 400
    assert fragment in response.content.decode()
    assert ComputeCluster.objects.count() == 1


def test_it_edits_a_cluster_and_keeps_it_on_a_bad_edit(login, owner, workspace, cluster):
    client = login(owner)
    response = client.post(f"/w/{workspace.slug}/clusters/{cluster.pk}/edit", cluster_data(name="cpu", min_nodes="5", max_nodes="1"))
    assert response.status_code == 400
    cluster.refresh_from_db()
    assert cluster.max_nodes == 3
    response = client.post(f"/w/{workspace.slug}/clusters/{cluster.pk}/edit", cluster_data(name="cpu", max_nodes="6"))
    assert response.status_code == 302
    cluster.refresh_from_db()
    assert cluster.max_nodes == 6 and cluster.gpus_per_node == 4


def test_it_lists_and_creates_environments(login, contributor, reader, workspace):
    client = login(contributor)
    response = client.post(f"/w/{workspace.slug}/environments/new", {"name": "timm", "requirements": "timm==1.0.9\n"})
    assert response.status_code == 302
    environment = Environment.objects.get()
    assert environment.requirement_list == ["timm==1.0.9"] and environment.created_by == contributor
    body = login(reader).get(f"/w/{workspace.slug}/environments/").content.decode()
    assert "timm==1.0.9" in body
    assert login(reader).post(f"/w/{workspace.slug}/environments/new", {"name": "x", "requirements": ""}).status_code == 403


@pytest.mark.parametrize(
    "requirements, fragment",
    [("-r requirements.txt", "pip options"), ("git+https://github.com/x/y", "URLs and file paths"), ("./local", "URLs and file paths")],
)
def test_it_refuses_a_bad_environment(login, contributor, workspace, requirements, fragment):
    response = login(contributor).post(f"/w/{workspace.slug}/environments/new", {"name": "bad", "requirements": requirements})
    assert response.status_code == 400
    assert fragment in response.content.decode()
    assert Environment.objects.count() == 0


def test_it_shows_whether_an_environment_is_built_and_its_last_run(login, reader, owner, workspace, experiment, cluster,
                                                                  redis_conn):
    from jobs.environments import environments_root
    from jobs.services import submit_job

    environment = Environment.objects.create(workspace=workspace, name="tqdm", requirements="tqdm")
    page = login(reader).get(f"/w/{workspace.slug}/environments/").content.decode()
    assert "not yet" in page and "never" in page
    job = submit_job(user=owner, experiment=experiment, cluster=cluster, entry_script="train.py", source_kind="example",
                     example_name="digits", environment=environment)
    ready = environments_root() / environment.requirements_hash / ".ready"
    ready.parent.mkdir(parents=True, exist_ok=True)
    ready.write_text("tqdm\n")
    try:
        page = login(reader).get(f"/w/{workspace.slug}/environments/").content.decode()
    finally:
        ready.unlink()
    assert "not yet" not in page and f"/runs/{job.run_id}/" in page


def test_it_refuses_a_duplicate_environment_name(login, contributor, workspace):
    Environment.objects.create(workspace=workspace, name="timm", requirements="timm")
    response = login(contributor).post(f"/w/{workspace.slug}/environments/new", {"name": "timm", "requirements": "tqdm"})
    assert response.status_code == 400
    assert "already an environment called timm" in response.content.decode()
