"""Login throttling: too many failed attempts per username or per client address → 429.

Counters live in Redis (the embedded server or REDIS_URL), so every gunicorn
process and every web machine shares them, and they expire on their own. If
Redis cannot be reached the login still works (fail open) and a warning is
logged: locking every user out because the queue server is down would be worse.
"""

import hashlib
import logging
import math

import redis
from django.conf import settings

from config.redis import get_connection

log = logging.getLogger("torchlight.security")

PREFIX = "torchlight:login-failures"


def _limits():
    return settings.LOGIN_FAILURE_LIMIT, settings.LOGIN_FAILURE_WINDOW_SECONDS


def client_address(request):
    """The client's address; with N trusted proxies in front, the Nth address from the right of X-Forwarded-For."""
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies > 0:
        forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if a.strip()]
        if len(forwarded) >= proxies:
            return forwarded[-proxies]
    return request.META.get("REMOTE_ADDR", "") or "unknown"


def _keys(username, address):
    user_part = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    return [f"{PREFIX}:user:{user_part}", f"{PREFIX}:addr:{address}"]


def _connection():
    return get_connection(settings.REDIS_URL)


def blocked_for(username, address):
    """Seconds until another attempt is allowed (0 when allowed)."""
    limit, _ = _limits()
    try:
        conn = _connection()
        pipe = conn.pipeline()
        for key in _keys(username, address):
            pipe.get(key)
            pipe.ttl(key)
        values = pipe.execute()
    except (redis.exceptions.RedisError, OSError) as exc:
        log.warning("login throttle unavailable (Redis: %s); allowing the attempt", exc)
        return 0
    wait = 0
    for count, ttl in zip(values[0::2], values[1::2], strict=True):
        if count is not None and int(count) >= limit:
            wait = max(wait, ttl if ttl and ttl > 0 else 1)
    return wait


def record_failure(username, address):
    _, window = _limits()
    try:
        pipe = _connection().pipeline()
        for key in _keys(username, address):
            # The window starts at the first failure: SET NX EX creates the key with its expiry, INCR keeps it.
            pipe.set(key, 0, ex=window, nx=True)
            pipe.incr(key)
        pipe.execute()
    except (redis.exceptions.RedisError, OSError) as exc:
        log.warning("login throttle unavailable (Redis: %s); failure not counted", exc)


def record_success(username):
    """A good password clears the username's counter (the address's keeps counting down)."""
    try:
        _connection().delete(_keys(username, "-")[0])
    except (redis.exceptions.RedisError, OSError) as exc:
        log.warning("login throttle unavailable (Redis: %s)", exc)


def wait_message(seconds):
    minutes = max(1, math.ceil(seconds / 60))
    unit = "minute" if minutes == 1 else "minutes"
    return f"Too many failed attempts, try again in {minutes} {unit}."
