"""Start-up checks that turn a wrong DATABASE_URL or REDIS_URL into one clear line."""

import os

from django.conf import settings
from django.db import connections

from config import redis as tl_redis


class StartupError(Exception):
    pass


def check_database():
    try:
        connections["default"].ensure_connection()
    except Exception as exc:  # each driver raises its own types
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        setting = "DATABASE_URL" if os.environ.get("DATABASE_URL") else "TORCHLIGHT_DATA_DIR (SQLite)"
        raise StartupError(f"{setting}: cannot connect to the database ({reason})") from None


def check_redis():
    if not tl_redis.ping():
        raise StartupError(f"REDIS_URL: cannot connect to Redis at {settings.REDIS_URL}")
