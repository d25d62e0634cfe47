"""Response headers, host checking and the production settings."""

import json
import os
import secrets
import subprocess
import sys

import pytest
from django.conf import settings

ROOT = settings.BASE_DIR


def run_python(code, env_overrides, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_ENV", "SECRET_KEY", "ALLOWED_HOSTS")}
    env["TORCHLIGHT_DATA_DIR"] = str(tmp_path)
    env.update(env_overrides)
    return subprocess.run([sys.executable, *code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def production_env(**extra):
    return {
        "DJANGO_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "torchlight.example.com",
        **extra,
    }


@pytest.mark.django_db
def test_it_sends_csp_nosniff_and_frame_deny_on_pages(client):
    response = client.get("/login/")
    assert response.status_code == 200
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    assert "object-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"


@pytest.mark.django_db
def test_it_sends_the_headers_on_errors_too(client):
    response = client.get("/no-such-page/")
    assert response.status_code in (302, 404)
    assert "Content-Security-Policy" in response
    assert response["X-Frame-Options"] == "DENY"


@pytest.mark.django_db
def test_it_answers_400_to_an_unknown_host(client):
    assert client.get("/login/", HTTP_HOST="evil.example").status_code == 400
    assert client.get("/api/v1/whoami", HTTP_HOST="evil.example").status_code == 400
    assert client.get("/login/", HTTP_HOST="localhost").status_code == 200


def test_it_passes_check_deploy_in_production(tmp_path):
    result = run_python(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"], production_env(), tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNINGS" not in result.stdout + result.stderr


def test_it_turns_on_secure_cookies_hsts_and_ssl_redirect_in_production(tmp_path):
    code = (
        "import django,json,os;os.environ.setdefault('DJANGO_SETTINGS_MODULE','config.settings');django.setup();"
        "from django.conf import settings as s;"
        "print(json.dumps({k:getattr(s,k) for k in ['SESSION_COOKIE_SECURE','CSRF_COOKIE_SECURE','SECURE_SSL_REDIRECT',"
        "'SECURE_HSTS_SECONDS','SECURE_HSTS_INCLUDE_SUBDOMAINS','ALLOWED_HOSTS','DEBUG','SESSION_COOKIE_HTTPONLY']}))"
    )
    result = run_python(["-c", code], production_env(), tmp_path)
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert values["SESSION_COOKIE_SECURE"] and values["CSRF_COOKIE_SECURE"] and values["SECURE_SSL_REDIRECT"]
    assert values["SECURE_HSTS_SECONDS"] >= 31536000 and values["SECURE_HSTS_INCLUDE_SUBDOMAINS"]
    assert values["ALLOWED_HOSTS"] == ["torchlight.example.com"]
    assert values["DEBUG"] is False and values["SESSION_COOKIE_HTTPONLY"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"SECRET_KEY": ""}, "SECRET_KEY must be set"),
        ({"SECRET_KEY": "short-key"}, "SECRET_KEY is too weak"),
        ({"SECRET_KEY": "a" * 80}, "SECRET_KEY is too weak"),
        ({"SECRET_KEY": "django-insecure-" + secrets.token_urlsafe(50)}, "SECRET_KEY is too weak"),
        ({"ALLOWED_HOSTS": ""}, "ALLOWED_HOSTS must list"),
        ({"ALLOWED_HOSTS": "*"}, "ALLOWED_HOSTS must list"),
    ],
)
def test_it_refuses_to_start_in_production_with_weak_settings(tmp_path, overrides, message):
    result = run_python(["manage.py", "check"], production_env(**overrides), tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_it_fails_check_deploy_when_debug_is_on_in_production(tmp_path):
    result = run_python(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"], production_env(DEBUG="1"), tmp_path
    )
    assert result.returncode != 0
    assert "DEBUG" in result.stdout + result.stderr


def test_it_never_generates_a_secret_key_file_in_production(tmp_path):
    run_python(["manage.py", "check"], production_env(), tmp_path)
    assert not (tmp_path / "secret_key").exists()


@pytest.mark.django_db
def test_it_refuses_nul_bytes_in_urls_before_any_view(client, owner, run):
    # PostgreSQL refuses NUL in text: without this gate a hostile URL would be a 500 there.
    client.force_login(owner)
    page = client.get(f"/runs/{run.id}/artifacts/?path=a%00b")
    assert page.status_code == 404 and b"NUL" in page.content
    api = client.get(f"/api/v1/runs/{run.id}/artifacts/a%00b")
    assert api.status_code == 404
    assert api.json()["error"]["code"] == "not_found"
    assert client.get(f"/runs/{run.id}/").status_code == 200  # ordinary URLs are untouched


@pytest.mark.django_db
def test_it_refuses_nul_characters_in_json_bodies_with_a_clear_error(client, owner, run):
    from tracker.models import ApiToken

    _, raw = ApiToken.mint(owner, "nul test")
    body = '{"points": [{"key": "loss\\u0000x", "value": 1.0, "step": 0}, {"key": "loss", "value": 2.0, "step": 0}]}'
    response = client.post(
        f"/api/v1/runs/{run.id}/metrics", body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}"
    )
    assert response.status_code == 400
    assert "NUL" in response.json()["error"]["message"]
    assert not run.metric_series.exists()  # nothing half-stored
    mlflow = client.post(
        "/api/2.0/mlflow/experiments/create", '{"name": "a\\u0000b"}', content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    assert mlflow.status_code == 400
    assert mlflow.json()["error_code"] == "INVALID_PARAMETER_VALUE"
