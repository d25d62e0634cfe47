"""Accounts: throttled login, rotated sessions, safe redirects, no default credentials."""

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import Client

from tests.conftest import PASSWORD


@pytest.fixture
def throttle(redis_conn, settings):
    settings.LOGIN_FAILURE_LIMIT = 5
    settings.LOGIN_FAILURE_WINDOW_SECONDS = 15 * 60
    return redis_conn


def fail_login(client, username, times, **extra):
    responses = [client.post("/login/", {"username": username, "password": "wrong-password"}, **extra) for _ in range(times)]
    return responses[-1]


def test_it_throttles_a_username_after_five_failures(throttle, client, owner):
    response = fail_login(client, "olivia", 5)
    assert response.status_code == 200  # the fifth is still an ordinary failure
    response = client.post("/login/", {"username": "olivia", "password": PASSWORD})
    assert response.status_code == 429
    assert "Too many failed attempts, try again in 15 minutes" in response.content.decode()
    assert int(response["Retry-After"]) > 14 * 60
    assert "_auth_user_id" not in client.session  # even the right password does not get in


def test_it_throttles_a_username_from_any_address(throttle, owner):
    for i in range(5):
        fail_login(Client(), "olivia", 1, REMOTE_ADDR=f"10.0.0.{i}")
    response = Client().post("/login/", {"username": "OLIVIA", "password": PASSWORD}, REMOTE_ADDR="10.9.9.9")
    assert response.status_code == 429


def test_it_throttles_an_address_across_usernames(throttle, client, owner):
    for name in ["a", "b", "c", "d", "e"]:
        fail_login(client, name, 1, REMOTE_ADDR="10.1.1.1")
    blocked = Client().post("/login/", {"username": "olivia", "password": PASSWORD}, REMOTE_ADDR="10.1.1.1")
    assert blocked.status_code == 429
    elsewhere = Client().post("/login/", {"username": "olivia", "password": PASSWORD}, REMOTE_ADDR="10.2.2.2")
    assert elsewhere.status_code == 302


def test_it_lets_the_user_in_again_when_the_window_ends(throttle, client, owner):
    fail_login(client, "olivia", 5)
    assert client.post("/login/", {"username": "olivia", "password": PASSWORD}).status_code == 429
    for key in throttle.keys("torchlight:login-failures:*"):
        throttle.delete(key)  # what expiry does after 15 minutes
    assert client.post("/login/", {"username": "olivia", "password": PASSWORD}).status_code == 302


def test_it_counts_failures_with_an_expiry(throttle, client, owner):
    fail_login(client, "olivia", 2)
    keys = throttle.keys("torchlight:login-failures:*")
    assert len(keys) == 2  # one per username, one per address
    for key in keys:
        assert int(throttle.get(key)) == 2
        assert 0 < throttle.ttl(key) <= 15 * 60


def test_it_clears_the_username_counter_after_a_good_login(throttle, client, owner):
    fail_login(client, "olivia", 4)
    assert client.post("/login/", {"username": "olivia", "password": PASSWORD}).status_code == 302
    client.logout()
    fail_login(Client(), "olivia", 4, REMOTE_ADDR="10.3.3.3")
    assert Client().post("/login/", {"username": "olivia", "password": PASSWORD}, REMOTE_ADDR="10.4.4.4").status_code == 302


def test_it_fails_open_with_a_warning_when_redis_is_down(db, settings, client, owner, caplog, tmp_path):
    settings.REDIS_URL = f"unix://{tmp_path}/nothing-here.sock?db=0"
    for _ in range(7):
        client.post("/login/", {"username": "olivia", "password": "wrong-password"})
    response = client.post("/login/", {"username": "olivia", "password": PASSWORD})
    assert response.status_code == 302
    assert "login throttle unavailable" in caplog.text


def test_it_rotates_the_session_key_at_login(throttle, client, owner):
    client.get("/login/")
    session = client.session
    session["before-login"] = "x"
    session.save()
    before = session.session_key
    response = client.post("/login/", {"username": "olivia", "password": PASSWORD})
    assert response.status_code == 302
    assert client.cookies[settings.SESSION_COOKIE_NAME].value != before
    assert client.session.session_key != before
    from django.contrib.sessions.models import Session

    assert not Session.objects.filter(session_key=before).exists()


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"])
def test_it_never_redirects_off_site_after_login(throttle, client, owner, target):
    response = client.post("/login/", {"username": "olivia", "password": PASSWORD, "next": target})
    assert response.status_code == 302
    assert "evil.example" not in response["Location"] and "javascript" not in response["Location"]


def test_it_sends_the_admin_login_through_the_throttled_login(throttle, client, owner):
    response = client.get("/admin/login/?next=/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")
    client.force_login(owner)
    assert client.get("/admin/login/").status_code == 403  # a non-staff user: no redirect loop


@pytest.mark.parametrize("weak", ["password", "12345678", "olivia12", "short"])
def test_it_validates_passwords(db, weak):
    user = get_user_model()(username="olivia12")
    with pytest.raises(ValidationError):
        validate_password(weak, user)
    validate_password("a-long-unusual-passphrase-77", user)


@pytest.mark.django_db
def test_it_never_uses_a_fixed_admin_password(monkeypatch):
    from config.bootstrap import ensure_admin_user

    monkeypatch.delenv("TORCHLIGHT_ADMIN_PASSWORD", raising=False)
    first = ensure_admin_user()
    get_user_model().objects.all().delete()
    second = ensure_admin_user()
    assert first and second and first != second
    assert len(first) >= 12
    admin = get_user_model().objects.get(username="admin")
    for guess in ["admin", "password", "torchlight", "changeme", ""]:
        assert not admin.check_password(guess)


def test_it_ships_no_default_credentials_in_the_source():
    """No create_user/create_superuser/set_password call with a literal password outside tests."""
    pattern = re.compile(r"(create_superuser|create_user|set_password)\([^)]*['\"][^'\"]{3,}['\"]\s*\)")
    literal_password = re.compile(r"password\s*=\s*['\"][^'\"]+['\"]")
    offenders = []
    for folder in ["config", "tracker", "jobs", "registry"]:
        for path in Path(settings.BASE_DIR, folder).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            text = path.read_text()
            for match in pattern.finditer(text):
                if literal_password.search(match.group(0)) or match.group(1) == "set_password":
                    offenders.append(f"{path}: {match.group(0)}")
    assert not offenders, "default credentials in the source:\n" + "\n".join(offenders)
