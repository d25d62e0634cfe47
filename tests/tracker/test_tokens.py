import io

import pytest
from django.core.management import CommandError, call_command

from tracker.models import ApiToken, hash_token


@pytest.mark.django_db
def test_it_creates_a_token_shown_once_and_stored_hashed(login, owner):
    client = login(owner)
    r = client.post("/settings/tokens/", {"action": "create", "name": "laptop <b>", "expires_in_days": "30"})
    assert r.status_code == 200
    raw = r.context["new_secret"]
    assert raw.encode() in r.content and b"laptop &lt;b&gt;" in r.content
    token = ApiToken.objects.get(user=owner)
    assert token.token_hash == hash_token(raw) and raw not in (token.token_hash, token.hint) and token.expires_at
    page = client.get("/settings/tokens/")
    assert raw.encode() not in page.content and token.hint.encode() in page.content
    assert client.get("/api/v1/whoami", HTTP_AUTHORIZATION=f"Bearer {raw}").json()["user"] == "olivia"


@pytest.mark.django_db
def test_it_revokes_a_token(login, owner, client):
    token, raw = ApiToken.mint(owner, "t")
    r = login(owner).post("/settings/tokens/", {"action": "revoke", "token_id": token.pk})
    assert r.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at
    assert client.get("/api/v1/whoami", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401


@pytest.mark.django_db
def test_it_cannot_revoke_someone_elses_token(login, owner, outsider):
    theirs, _ = ApiToken.mint(outsider, "t")
    r = login(owner).post("/settings/tokens/", {"action": "revoke", "token_id": theirs.pk})
    assert r.status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


@pytest.mark.django_db
def test_it_refuses_a_nameless_token(login, owner):
    r = login(owner).post("/settings/tokens/", {"action": "create", "name": " "})
    assert r.status_code == 400 and not ApiToken.objects.exists()


@pytest.mark.django_db
def test_it_never_lets_a_token_open_pages(client, owner, run):
    _token, raw = ApiToken.mint(owner, "t")
    for url in ("/settings/tokens/", f"/runs/{run.id}/metrics/loss.json"):
        r = client.get(url, HTTP_AUTHORIZATION=f"Bearer {raw}")
        assert r.status_code == 302 and "/login/" in r["Location"]


@pytest.mark.django_db
def test_it_prints_a_token_from_the_command_line(owner, client):
    out = io.StringIO()
    call_command("create_token", "olivia", "--name", "ci", stdout=out)
    raw = out.getvalue().strip()
    assert client.get("/api/v1/whoami", HTTP_AUTHORIZATION=f"Bearer {raw}").json() == {
        "user": "olivia", "token": "ci", "run_id": None,
    }  # fmt: skip
    with pytest.raises(CommandError):
        call_command("create_token", "nobody")
