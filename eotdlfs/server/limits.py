"""The server's size caps, with defaults and `EOTDLFS_*` environment overrides."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

MiB = 1024 * 1024
GiB = 1024 * MiB


@dataclass(frozen=True)
class Limits:
    """Caps that keep one request from filling the disk or memory, or holding a connection for good."""

    max_body_bytes: int = 1 * GiB          # a multipart request body (413 above)
    max_other_body_bytes: int = 4 * MiB    # a JSON or url-encoded body, parsed in memory
    # the JSON of `PUT datasets/stac/ID`, parsed whole: ~12 bytes of server memory per byte
    # (scripts/bench_stac_server.py), so 128 MiB peaks near 1.6 GiB (512 MiB: ~6 GiB); 100,000 ~1 KB items fit
    max_stac_body_bytes: int = 128 * MiB
    zip_max_total_bytes: int = 2 * GiB     # sum of uncompressed entries of one batch
    zip_max_entries: int = 10_000
    zip_max_ratio: int = 200               # uncompressed / compressed, per entry ...
    zip_ratio_floor_bytes: int = 1 * MiB   # ... checked once an entry is bigger than this
    max_parts: int = 10_000                # part numbers 1..max_parts
    max_head_bytes: int = 64 * 1024        # a request's line and headers (431 above; see server/protocol.py)
    head_timeout_s: int = 30               # to send them, from the connection's start or the previous answer (408)
    # each database statement, lock wait, connection and pooled connection wait (503 above): a hung
    # database otherwise holds a worker thread and a pooled connection per request until the pool runs out
    db_statement_timeout_s: int = 30
    send_timeout_s: int = 60               # a client accepting no byte of an answer this long: connection aborted
    body_timeout_s: int = 60               # a request body with no byte for this long while awaited: 408, closed
    upload_ttl_s: int = 7 * 24 * 3600      # a multipart upload not completed this long: its row and parts dropped
    # multipart uploads a user has started and not completed (429 above): each may keep up to
    # max_parts x max_body_bytes of parts on disk until upload_ttl_s, so their number is the cap on that
    max_open_uploads: int = 1000

    @classmethod
    def from_env(cls) -> "Limits":
        """Defaults, each overridable by EOTDLFS_<FIELD NAME IN CAPITALS> (an integer)."""
        values = {}
        for f in fields(cls):
            name = "EOTDLFS_" + f.name.upper()
            raw = os.environ.get(name)
            if raw is None:
                continue
            try:
                values[f.name] = int(raw)
            except ValueError:
                raise ValueError(f"{name} must be an integer, got {raw!r}") from None
            if values[f.name] < 1:
                raise ValueError(f"{name} must be at least 1, got {raw!r}")
        return cls(**values)
