import os
import subprocess
import sys

import pytest
from django.conf import settings

from config import redis as tl_redis

ROOT = settings.BASE_DIR


def run_manage(*args, env_overrides=None, tmp_path=None):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_ENV", "SECRET_KEY")}
    env["TORCHLIGHT_DATA_DIR"] = str(tmp_path)
    env.update(env_overrides or {})
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_it_names_database_url_when_it_is_junk(tmp_path):
    result = run_manage("check", env_overrides={"DATABASE_URL": "nosuchdb://x"}, tmp_path=tmp_path)
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_it_names_database_url_when_the_server_is_unreachable(tmp_path):
    result = run_manage(
        "up", "--no-supervisor", env_overrides={"DATABASE_URL": "postgres://u:p@127.0.0.1:1/none"}, tmp_path=tmp_path
    )
    assert result.returncode != 0
    assert "DATABASE_URL: cannot connect to the database" in result.stderr
    assert "Traceback" not in result.stderr


def test_it_names_redis_url_when_it_is_junk(tmp_path):
    result = run_manage("check", env_overrides={"REDIS_URL": "http://localhost"}, tmp_path=tmp_path)
    assert result.returncode == 2
    assert "REDIS_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_it_names_redis_url_when_redis_is_unreachable(tmp_path):
    result = run_manage(
        "up", "--no-supervisor", env_overrides={"REDIS_URL": "redis://127.0.0.1:1/0"}, tmp_path=tmp_path
    )
    assert result.returncode != 0
    assert "REDIS_URL: cannot connect to Redis" in result.stderr
    assert "Traceback" not in result.stderr


def test_it_requires_secret_key_in_production(tmp_path):
    result = run_manage("check", env_overrides={"DJANGO_ENV": "production"}, tmp_path=tmp_path)
    assert result.returncode == 2
    assert "SECRET_KEY must be set" in result.stderr


def test_it_generates_the_secret_key_once_into_the_data_dir(tmp_path):
    run_manage("check", tmp_path=tmp_path)
    first = (tmp_path / "secret_key").read_text()
    run_manage("check", tmp_path=tmp_path)
    assert (tmp_path / "secret_key").read_text() == first
    assert len(first) >= 50


def test_it_uses_sqlite_in_wal_mode_with_immediate_transactions(db):
    from django.db import connection

    assert connection.vendor != "sqlite" or settings.DATABASES["default"]["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode")
            assert cursor.fetchone()[0] == "wal"


def test_it_starts_a_real_embedded_redis_and_reuses_it(tmp_path):
    socket_path = tmp_path / "r" / "redis.sock"
    url = tl_redis.start_embedded_redis(socket_path)
    try:
        conn = tl_redis.get_connection(url)
        conn.set("k", "v")
        pid = conn.info("server")["process_id"]
        assert tl_redis.start_embedded_redis(socket_path) == url
        assert tl_redis.get_connection(url).info("server")["process_id"] == pid
        assert conn.get("k") == b"v"
    finally:
        tl_redis.stop_embedded_redis(socket_path)
    assert not tl_redis.ping(url)


@pytest.mark.django_db
def test_bootstrap_creates_admin_with_generated_password_once(monkeypatch):
    from django.contrib.auth import get_user_model

    from config.bootstrap import ensure_admin_user, ensure_default_workspace

    monkeypatch.delenv("TORCHLIGHT_ADMIN_PASSWORD", raising=False)
    password = ensure_admin_user()
    assert password and len(password) >= 12
    admin = get_user_model().objects.get(username="admin")
    assert admin.check_password(password)
    assert ensure_admin_user() is None  # never reset on a second start
    workspace = ensure_default_workspace()
    assert workspace.role_of(admin) == "owner"


@pytest.mark.django_db
def test_bootstrap_takes_admin_password_from_the_environment(monkeypatch):
    from django.contrib.auth import get_user_model

    from config.bootstrap import ensure_admin_user

    monkeypatch.setenv("TORCHLIGHT_ADMIN_PASSWORD", "a-chosen-password-91")
    assert ensure_admin_user() is None
    assert get_user_model().objects.get(username="admin").check_password("a-chosen-password-91")
