"""The writable staging area: `MNT/staging/{datasets,models}/NAME/`, a copy-on-write overlay flushed as a new version."""

from __future__ import annotations

from typing import Any


def make_staging_overlay(context: Any) -> Any:
    """The `StagingArea` of a mount (imported lazily: the read-only mount does not need it to start)."""
    from eotdlfs.fs.staging.mounted import make_staging_overlay as make

    return make(context)
