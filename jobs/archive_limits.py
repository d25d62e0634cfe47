"""Limits on uploaded job sources, read from the environment (working defaults).

Read on every call, so an operator's change applies without code and a test
can lower a limit with monkeypatch.setenv.
"""

from dataclasses import dataclass

from config.env import env_int


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int
    max_total_bytes: int
    max_member_bytes: int
    max_upload_bytes: int


def archive_limits():
    return ArchiveLimits(
        max_members=env_int("TORCHLIGHT_SOURCE_MAX_MEMBERS", 2000),
        max_total_bytes=env_int("TORCHLIGHT_SOURCE_MAX_BYTES", 500 * 1024 * 1024),
        max_member_bytes=env_int("TORCHLIGHT_SOURCE_MAX_MEMBER_BYTES", 200 * 1024 * 1024),
        max_upload_bytes=env_int("TORCHLIGHT_SOURCE_MAX_UPLOAD_BYTES", 200 * 1024 * 1024),
    )
