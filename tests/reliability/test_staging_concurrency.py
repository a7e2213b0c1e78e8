"""Two mounts flush the same dataset at once: two consecutive whole versions or a clear conflict, never a mix.

Mount A and mount B (own caches, same server, same user) each stage a different change of
v1: both rewrite the same file, each adds and deletes its own. Allowed outcomes: two new
published versions, the first = v1 + one mount's changes and the second = the first + the
other's (a flush that lost the publish race applies its staged changes onto the winner's
version and tries again), or one flush fails with an error saying why and the one new
version is whole. Never a version holding part of one mount's changes, no draft left over.
The loser's discarded draft may leave a gap in the version numbers (v1, v3, v4).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from eotdlfs.client.ingest import ingest_folder
from reliability.conftest import Proxied, assert_fsck_ok
from reliability.faultproxy import FaultProxy
from tests.client.helpers import cli_env, client, make_folder

KIND, NAME = "datasets", "two-mounts"
Changes = dict[str, str | None]  # path -> SHA-1 of the new bytes, None = deleted


def stage(target: Path, tag: str, delete: str) -> Changes:
    """Write TAG's change into the staging folder TARGET; return it."""
    shared, own = f"shared written by {tag}\n".encode(), f"only {tag} adds this\n".encode()
    (target / "part0" / "file0000.txt").write_bytes(shared)
    (target / f"added-by-{tag}.txt").write_bytes(own)
    (target / delete).unlink()
    return {"part0/file0000.txt": hashlib.sha1(shared).hexdigest(),
            f"added-by-{tag}.txt": hashlib.sha1(own).hexdigest(), delete: None}


def apply(files: dict[str, str], changes: Changes) -> dict[str, str]:
    out = dict(files)
    for path, checksum in changes.items():
        if checksum is None:
            out.pop(path, None)
        else:
            out[path] = checksum
    return out


def listing(server: Any, version: int) -> dict[str, str]:
    api = client(server)
    rid = api.record_by_name(KIND, NAME)["id"]
    return {f["filename"]: f["checksum"] for f in api.files(KIND, rid, version)}


def start_flush(tmp_path: Path, server: Any, target: Path) -> subprocess.Popen:
    env = cli_env(tmp_path, server.url, server.token("alice"))
    return subprocess.Popen([sys.executable, "-m", "eotdlfs", "flush", str(target), "--timeout", "90"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(flush: subprocess.Popen) -> tuple[int, str, str]:
    out, err = flush.communicate(timeout=120)
    return flush.returncode, out, err


def assert_whole_versions(server: Any, v1: dict[str, str], changes: list[Changes],
                          results: list[tuple[int, str, str]]) -> None:
    record = client(server).record_by_name(KIND, NAME)
    published = sorted(int(v["version_id"]) for v in record["versions"])
    assert not record["drafts"], ("a draft was left behind", record["drafts"], results)
    ok = [rc == 0 for rc, _, _ in results]
    if all(ok):
        assert len(published) == 3 and published[0] == 1, (published, results)
        got = (listing(server, published[1]), listing(server, published[2]))
        orders = [(apply(v1, first), apply(apply(v1, first), second)) for first, second in (changes, changes[::-1])]
        assert got in orders, f"a version mixes the two mounts' changes: {results}"
    else:
        assert any(ok), results  # one flush must win
        assert "published meanwhile" in results[ok.index(False)][2], "the refused flush must say why"
        assert len(published) == 2 and published[0] == 1, (published, results)
        assert listing(server, published[1]) == apply(v1, changes[ok.index(True)])
    assert_fsck_ok(server.root)


@pytest.fixture()
def two_stages(fresh_server, tmp_path: Path) -> tuple[dict[str, str], Any]:
    ingest_folder(client(fresh_server), KIND, make_folder(tmp_path / "src", NAME, 40))
    return listing(fresh_server, 1), fresh_server


def test_two_mounts_flushing_at_once_never_mix(two_stages, mount_factory, tmp_path: Path) -> None:
    v1, server = two_stages
    mounts = [mount_factory(server, ttl=1) for _ in range(2)]
    targets = [m.path / "staging" / KIND / NAME for m in mounts]
    changes = [stage(targets[0], "A", "part1/file0001.txt"), stage(targets[1], "B", "part2/file0002.txt")]
    flushes = [start_flush(tmp_path, server, t) for t in targets]
    assert_whole_versions(server, v1, changes, [finish(f) for f in flushes])


def test_second_flush_during_the_first_never_mixes(two_stages, mount_factory, tmp_path: Path, tally) -> None:
    """A's flush is held mid-upload (its draft v2 exists) while B's flush runs start to end (v3); then A goes on:
    its publish is refused, its draft discarded, and its changes go onto v3 as v4."""
    v1, server = two_stages
    with FaultProxy(server.url) as proxy:
        mount_a, mount_b = mount_factory(Proxied(proxy.url, server.token), ttl=1), mount_factory(server, ttl=1)
        targets = [m.path / "staging" / KIND / NAME for m in (mount_a, mount_b)]
        changes = [stage(targets[0], "A", "part1/file0001.txt"), stage(targets[1], "B", "part2/file0002.txt")]
        held = proxy.inject("stall", r"/batch\?", at=100, delay=60, count=1)
        flush_a = start_flush(tmp_path, server, targets[0])
        try:
            assert held.struck.wait(60)
            tally.faults_injected += 1
            result_b = finish(start_flush(tmp_path, server, targets[1]))
        finally:
            proxy.clear()  # A's upload goes on
        result_a = finish(flush_a)
        assert_whole_versions(server, v1, changes, [result_a, result_b])
    # B published first; A's publish was refused (based on v1), so A applied its changes onto B's version
    assert result_b[0] == 0 and result_a[0] == 0, (result_a, result_b)
    assert "applied onto v3" in result_a[1], result_a
    assert listing(server, 4) == apply(apply(v1, changes[1]), changes[0])
