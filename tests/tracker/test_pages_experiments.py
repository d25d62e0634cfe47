import pytest

from tracker.models import Experiment, MetricSeries, Param, Run, RunStatus

EVIL = "<img src=x onerror=alert(1)>"


@pytest.mark.django_db
def test_it_shows_the_workspace_home_with_recent_runs_and_progress(login, owner, workspace, make_run):
    run = make_run(name="trainer", status=RunStatus.RUNNING)
    run.set_progress(30, 120)
    response = login(owner).get("/w/vision/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "trainer" in body
    assert 'style="width: 25%"' in body
    assert "Recent models" in body and "Running jobs" in body


@pytest.mark.django_db
def test_it_hides_a_workspace_from_a_non_member(login, outsider, workspace):
    assert login(outsider).get("/w/vision/").status_code == 404
    assert login(outsider).get("/w/vision/experiments/").status_code == 404


@pytest.mark.django_db
def test_it_lists_and_searches_experiments_hiding_archived_ones(login, reader, workspace, owner):
    Experiment.objects.create(workspace=workspace, name="cifar-resnet", description="ResNet on CIFAR")
    Experiment.objects.create(workspace=workspace, name="mnist", description="digits")
    Experiment.objects.create(workspace=workspace, name="old-stuff", archived=True)
    client = login(reader)
    body = client.get("/w/vision/experiments/").content.decode()
    assert "cifar-resnet" in body and "mnist" in body and "old-stuff" not in body
    assert "Archive</button>" not in body  # readers get no controls
    body = client.get("/w/vision/experiments/?q=cifar").content.decode()
    assert "cifar-resnet" in body and "mnist" not in body
    body = client.get("/w/vision/experiments/?q=DIGITS").content.decode()
    assert "mnist" in body and "cifar-resnet" not in body
    body = client.get("/w/vision/experiments/?archived=1").content.decode()
    assert "old-stuff" in body


@pytest.mark.django_db
def test_it_creates_an_experiment_with_tags(login, contributor, workspace):
    response = login(contributor).post(
        "/w/vision/experiments/new/",
        {"name": "  resnet50 ", "description": "baseline", "tags_text": "dataset: imagenet\nteam=vision\n"},
    )
    experiment = Experiment.objects.get(workspace=workspace, name="resnet50")
    assert response.status_code == 302 and response["Location"] == f"/experiments/{experiment.pk}/"
    assert experiment.tags == {"dataset": "imagenet", "team": "vision"}
    assert experiment.created_by == contributor


@pytest.mark.django_db
def test_it_refuses_a_duplicate_experiment_name_and_changes_nothing(login, contributor, experiment):
    before = list(Experiment.objects.values_list("pk", "name", "description"))
    response = login(contributor).post("/w/vision/experiments/new/", {"name": "mnist-baseline", "description": "x"})
    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    assert list(Experiment.objects.values_list("pk", "name", "description")) == before


@pytest.mark.django_db
def test_it_refuses_renaming_onto_another_experiment(login, contributor, experiment, workspace):
    other = Experiment.objects.create(workspace=workspace, name="second")
    response = login(contributor).post(f"/experiments/{other.pk}/edit/", {"name": "mnist-baseline", "tags_text": ""})
    assert response.status_code == 200 and "already exists" in response.content.decode()
    other.refresh_from_db()
    assert other.name == "second"


@pytest.mark.django_db
def test_it_rejects_a_bad_tag_line(login, contributor, experiment):
    response = login(contributor).post(
        f"/experiments/{experiment.pk}/edit/", {"name": "mnist-baseline", "tags_text": ": nokey"}
    )
    assert response.status_code == 200 and "Line 1" in response.content.decode()


@pytest.mark.django_db
def test_it_edits_description_and_tags(login, contributor, experiment):
    response = login(contributor).post(
        f"/experiments/{experiment.pk}/edit/", {"name": "mnist-baseline", "description": "new", "tags_text": "a: 1"}
    )
    assert response.status_code == 302
    experiment.refresh_from_db()
    assert experiment.description == "new" and experiment.tags == {"a": "1"}


@pytest.mark.django_db
def test_it_allows_the_same_name_in_another_workspace(login, outsider, experiment, other_workspace):
    response = login(outsider).post("/w/other/experiments/new/", {"name": "mnist-baseline"})
    assert response.status_code == 302
    assert Experiment.objects.filter(name="mnist-baseline").count() == 2


@pytest.mark.django_db
def test_it_archives_and_unarchives_by_post_only(login, contributor, experiment):
    client = login(contributor)
    assert client.get(f"/experiments/{experiment.pk}/archive/").status_code == 405
    assert client.post(f"/experiments/{experiment.pk}/archive/").status_code == 302
    experiment.refresh_from_db()
    assert experiment.archived
    assert client.post(f"/experiments/{experiment.pk}/unarchive/").status_code == 302
    experiment.refresh_from_db()
    assert not experiment.archived


@pytest.mark.django_db
def test_it_forbids_readers_to_change_experiments(login, reader, experiment):
    client = login(reader)
    assert client.get("/w/vision/experiments/new/").status_code == 403
    assert client.post("/w/vision/experiments/new/", {"name": "sneaky"}).status_code == 403
    assert client.post(f"/experiments/{experiment.pk}/archive/").status_code == 403
    assert client.post(f"/experiments/{experiment.pk}/edit/", {"name": "renamed"}).status_code == 403
    experiment.refresh_from_db()
    assert experiment.name == "mnist-baseline" and not experiment.archived
    assert not Experiment.objects.filter(name="sneaky").exists()


@pytest.mark.django_db
def test_it_gives_outsiders_404_for_experiments_of_another_workspace(login, outsider, experiment):
    client = login(outsider)
    assert client.get(f"/experiments/{experiment.pk}/").status_code == 404
    assert client.post(f"/experiments/{experiment.pk}/archive/").status_code == 404
    assert client.get(f"/experiments/{experiment.pk}/edit/").status_code == 404
    assert client.post("/w/vision/experiments/new/", {"name": "x"}).status_code == 404


@pytest.mark.django_db
def test_it_requires_login_everywhere(client, experiment, run):
    for url in ["/", "/w/vision/", "/w/vision/experiments/", f"/experiments/{experiment.pk}/",
                f"/runs/{run.id}/", f"/runs/{run.id}/artifacts/", f"/compare/?runs={run.id},{run.id}"]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), url


@pytest.mark.django_db
def test_it_renders_the_404_page_for_unknown_urls(login, owner):
    response = login(owner).get("/no/such/page/")
    assert response.status_code == 404
    assert "Page not found" in response.content.decode()


@pytest.mark.django_db
def test_it_escapes_html_in_names_on_the_experiment_pages(login, owner, workspace):
    experiment = Experiment.objects.create(workspace=workspace, name=EVIL, description=EVIL, tags={EVIL: EVIL})
    run = Run.objects.create(experiment=experiment, name=EVIL, created_by=owner)
    Param.objects.create(run=run, key=EVIL, value=EVIL)
    MetricSeries.objects.create(run=run, key=EVIL, last_value=1.0, count=1)
    client = login(owner)
    for url in ["/w/vision/", "/w/vision/experiments/", f"/experiments/{experiment.pk}/",
                f"/experiments/{experiment.pk}/edit/"]:
        body = client.get(url).content.decode()
        assert EVIL not in body, url
        assert "&lt;img src=x onerror=alert(1)&gt;" in body, url
