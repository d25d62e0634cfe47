"""Helpers for tests that start other processes (workers, servers) against the test database."""

from urllib.parse import quote

from django.db import connections


def subprocess_database_url(alias="default"):
    """A DATABASE_URL naming the database this process is using now (the test database under pytest).

    Works for the embedded SQLite and for PostgreSQL (including a unix-socket host), so a worker
    subprocess sees the test's rows whichever backend `make test` runs on. Hard-coding
    `sqlite:///<NAME>` breaks the PostgreSQL pass: the worker opens an empty SQLite file instead.
    """
    db = connections[alias].settings_dict
    engine = db["ENGINE"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    if "postgresql" in engine:
        host = db.get("HOST") or (db.get("OPTIONS") or {}).get("host") or ""
        user = quote(db.get("USER") or "", safe="")
        password = db.get("PASSWORD") or ""
        auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
        port = f":{db['PORT']}" if db.get("PORT") else ""
        return f"postgres://{auth}{quote(host, safe='')}{port}/{quote(db['NAME'], safe='')}"
    raise ValueError(f"no DATABASE_URL form for the {engine} backend")


def subprocess_env(base=None, **extra):
    """os.environ (or `base`) with TORCHLIGHT_DATA_DIR and DATABASE_URL pointing at this test's data."""
    import os

    from django.conf import settings

    env = dict(os.environ if base is None else base)
    env["TORCHLIGHT_DATA_DIR"] = str(settings.DATA_DIR)
    env["DATABASE_URL"] = subprocess_database_url()
    env.update(extra)
    return env
