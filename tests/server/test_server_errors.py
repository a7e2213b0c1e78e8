"""When the server itself fails, the answer is still JSON with a `detail`: 507 for a full disk."""

from __future__ import annotations

import os
import subprocess

import pytest
from serverapi import Api, sha1


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_full_disk_is_507_and_nothing_is_half_stored(local_only, server_factory, small_disk, unique_name):
    server = server_factory(root=small_disk / "root")
    try:
        api = Api(server, "datasets", server.token("alice"))
        rid = api.create(unique_name("full"))
        api.new_version(rid)
        assert api.batch(rid, 1, {"small": b"fits"}).status_code == 200
        big = os.urandom(6 * 1024 * 1024)
        r = api.post(f"datasets/{rid}?version=1", files={"file": ("big", big)}, data={"checksum": sha1(big)})
        assert (r.status_code, r.json()) == (507, {"detail": "The repository's disk is full"})
        assert [f["filename"] for f in api.files(rid, 1)] == ["small"]
        assert api.download(rid, "small").content == b"fits"
    finally:
        server.stop()  # before the disk under it goes
