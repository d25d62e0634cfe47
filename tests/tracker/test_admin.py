import io

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model

from tracker import services
from tracker.models import ApiToken, Artifact, Experiment, Membership, MetricSeries, Param, Run, RunTag, Workspace

EVIL = "<img src=x onerror=alert(1)>"


@pytest.fixture
def admin_client(client, db):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-not-used-here")
    client.force_login(user)
    return client


def test_it_registers_every_tracking_model():
    for model in (Workspace, Membership, Experiment, Run, Param, RunTag, MetricSeries, Artifact, ApiToken):
        assert admin.site.is_registered(model), model


@pytest.mark.django_db
def test_it_opens_every_changelist_and_change_page(admin_client, run, owner):
    Param.objects.create(run=run, key="lr", value="0.1")
    RunTag.objects.create(run=run, key="t", value="v")
    series = MetricSeries.objects.create(run=run, key="loss", last_value=0.5, count=3)
    art = services.store_artifact(run, "a/b.txt", io.BytesIO(b"hi"))
    token, _ = ApiToken.mint(owner, "laptop")
    objects = {"workspace": run.experiment.workspace, "experiment": run.experiment, "run": run,
               "param": run.params.get(), "runtag": run.tags.get(), "metricseries": series, "artifact": art,
               "apitoken": token, "membership": Membership.objects.first()}
    for name, obj in objects.items():
        assert admin_client.get(f"/admin/tracker/{name}/").status_code == 200, name
        assert admin_client.get(f"/admin/tracker/{name}/?q=a").status_code == 200, name
        assert admin_client.get(f"/admin/tracker/{name}/{obj.pk}/change/").status_code == 200, name


@pytest.mark.django_db
def test_it_keeps_history_read_only(admin_client, run, owner):
    param = Param.objects.create(run=run, key="lr", value="0.1")
    art = services.store_artifact(run, "model.pt", io.BytesIO(b"weights"))
    token, _ = ApiToken.mint(owner, "laptop")
    # Posting new values for read-only fields changes nothing.
    admin_client.post(f"/admin/tracker/param/{param.pk}/change/", {"run": run.pk, "key": "lr", "value": "9"})
    param.refresh_from_db()
    assert param.value == "0.1"
    admin_client.post(f"/admin/tracker/artifact/{art.pk}/change/", {"sha256": "0" * 64, "storage_key": "../x"})
    art.refresh_from_db()
    assert art.sha256 != "0" * 64 and art.storage_key.startswith("artifacts/")
    html = admin_client.get(f"/admin/tracker/apitoken/{token.pk}/change/").content.decode()
    assert 'name="token_hash"' not in html
    html = admin_client.get(f"/admin/tracker/run/{run.pk}/change/").content.decode()
    assert 'name="running_at_0"' not in html and 'name="end_time_0"' not in html
    assert 'name="params-0-value"' not in html  # param inline is display only
    # No hand-made metric summaries, artifacts or tokens.
    assert admin_client.get("/admin/tracker/metricseries/add/").status_code == 403
    assert admin_client.get("/admin/tracker/artifact/add/").status_code == 403
    assert admin_client.get("/admin/tracker/apitoken/add/").status_code == 403


@pytest.mark.django_db
def test_it_creates_a_workspace_with_a_member_and_an_experiment(admin_client, owner):
    response = admin_client.post("/admin/tracker/workspace/add/", {
        "name": "NLP", "slug": "nlp", "description": "",
        "memberships-TOTAL_FORMS": "1", "memberships-INITIAL_FORMS": "0",
        "memberships-MIN_NUM_FORMS": "0", "memberships-MAX_NUM_FORMS": "1000",
        "memberships-0-user": owner.pk, "memberships-0-role": "owner",
    })
    assert response.status_code == 302
    workspace = Workspace.objects.get(slug="nlp")
    assert workspace.role_of(owner) == "owner"
    response = admin_client.post("/admin/tracker/experiment/add/", {
        "workspace": workspace.pk, "name": "bert", "description": "", "tags": "{}",
    })
    assert response.status_code == 302
    assert Experiment.objects.filter(workspace=workspace, name="bert").exists()


@pytest.mark.django_db
def test_it_revokes_tokens_with_an_action(admin_client, owner):
    token, _ = ApiToken.mint(owner, "ci")
    admin_client.post("/admin/tracker/apitoken/", {"action": "revoke_tokens", "_selected_action": [token.pk]})
    token.refresh_from_db()
    assert token.revoked_at is not None


@pytest.mark.django_db
def test_it_escapes_html_names_in_the_admin(admin_client, experiment, owner):
    run = Run.objects.create(experiment=experiment, name=EVIL, created_by=owner)
    for url in ["/admin/tracker/run/", f"/admin/tracker/run/{run.pk}/change/"]:
        assert EVIL not in admin_client.get(url).content.decode()
