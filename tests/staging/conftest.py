"""Fixtures of the staging tests: an overlay over a small published version in memory, and a mount
point another Unix user can reach."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import pytest

from eotdlfs.fs.staging.overlay import StagingOverlay
from tests.staging.fakes import BASE, FakeVersions


@pytest.fixture
def versions() -> FakeVersions:
    return FakeVersions(BASE)


@pytest.fixture
def overlay(tmp_path: Path, versions: FakeVersions) -> StagingOverlay:
    return StagingOverlay("datasets", "demo", tmp_path / "staging", versions.base, versions.open)


@pytest.fixture
def shared_mountpoint():
    """MNT in a fresh 0755 folder of /tmp (pytest's tmp dirs are 0700: no other user could reach it)."""
    parent = Path(tempfile.mkdtemp(dir="/tmp", prefix="eotdlfs-shared-"))
    try:
        parent.chmod(0o755)
        yield parent / "mnt"
    finally:
        for folder in (parent / "mnt", parent):  # rmdir, not rmtree: never into a mount still there
            with contextlib.suppress(OSError):
                folder.rmdir()
