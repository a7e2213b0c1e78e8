"""Values of requests checked the one way for every route: SHA-1 digests, file paths; and timestamps."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from eotdlfs.paths import BadPath, validate_file_path
from eotdlfs.server.errors import bad_request

_SHA1 = re.compile(r"^[0-9a-f]{40}$")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat()


def checked_sha1(value: Any) -> str:
    if not isinstance(value, str) or not _SHA1.match(value.lower()):
        raise bad_request(f"checksum {value!r} is not a SHA-1 hex digest")
    return value.lower()


def checked_path(value: Any) -> str:
    try:
        return validate_file_path(value)
    except BadPath as exc:
        raise bad_request(str(exc)) from None
