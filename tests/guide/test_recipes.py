"""Every recipe of docs/guide.md, run as written against a real server and a real mount."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from eotdlfs.fs.mount import is_mounted
from tests.fs.datasets import ingest, tree_digest, write_metadata
from tests.guide.recipes import NAME, recipe, recipes, run_python, run_shell, unmount_if_left

TESTED = {"mount", "rasterio-window", "pandas-csv", "dataset", "rsync-version", "rsync-update", "rsync-checksum",
          "ingest", "git-repository", "get", "fstab",  # fstab: test_mount_at_boot.py
          "eotdl-rasterio", "eotdl-pandas", "eotdl-zarr", "eotdl-dataset", "eotdl-pystac", "python-api"}  # test_without_a_mount.py


def test_every_recipe_of_the_guide_has_its_test() -> None:
    assert set(recipes()) == TESTED


def _labels(version: Path) -> list[dict[str, str]]:
    with open(version / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def test_mount_status_umount(guide_server, s2_tiles, places, tmp_path: Path) -> None:
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    try:
        out = run_shell(recipe("mount", places(mnt, cache)), tmp_path)
        assert {"v1", "v2", "latest"} <= set(out.split()), out
        assert not is_mounted(mnt)
    finally:
        unmount_if_left(mnt)


def test_rasterio_window_of_a_cog(guide_server, s2_tiles, mount_factory, places, tmp_path: Path) -> None:
    mnt = mount_factory(guide_server)
    before = guide_server.stats()["bytes_sent"]
    got = run_python(recipe("rasterio-window", places(mnt.path, mnt.cache_dir)),
                     "import hashlib; print(hashlib.sha1(window.tobytes()).hexdigest())", tmp_path)
    fetched = guide_server.stats()["bytes_sent"] - before
    assert got == _sha1(s2_tiles.scene[256:512, 512:768].tobytes())
    size = (s2_tiles.v1 / "scene.tif").stat().st_size
    assert fetched < size / 2, (fetched, size)


def test_pandas_read_csv(guide_server, s2_tiles, mount_factory, places, tmp_path: Path) -> None:
    mnt = mount_factory(guide_server)
    got = run_python(recipe("pandas-csv", places(mnt.path, mnt.cache_dir)),
                     "print(labels.to_json(orient='records'))", tmp_path)
    assert json.loads(got) == _labels(s2_tiles.v1)


def test_map_style_dataset_read_by_four_workers(guide_server, s2_tiles, mount_factory, places, tmp_path: Path) -> None:
    mnt = mount_factory(guide_server)
    got = run_python(recipe("dataset", places(mnt.path, mnt.cache_dir)),
                     "import hashlib, json; print(json.dumps([[hashlib.sha1(b).hexdigest(), label] "
                     "for b, label in samples]))", tmp_path)
    expected = [[_sha1((s2_tiles.v1 / row["path"]).read_bytes()), row["label"]] for row in _labels(s2_tiles.v1)]
    assert json.loads(got) == expected


def test_rsync_a_version_out(guide_server, s2_tiles, mount_factory, places, tmp_path: Path) -> None:
    mnt = mount_factory(guide_server)
    run_shell(recipe("rsync-version", places(mnt.path, mnt.cache_dir)), tmp_path)
    assert tree_digest(tmp_path / "data" / f"{NAME}-v1") == tree_digest(s2_tiles.v1)


def test_rsync_v1_then_v2_into_one_folder(guide_server, s2_tiles, mount_factory, places, tmp_path: Path) -> None:
    mnt = mount_factory(guide_server)
    before = guide_server.stats()["bytes_sent"]
    out = run_shell(recipe("rsync-update", places(mnt.path, mnt.cache_dir)), tmp_path)
    fetched = guide_server.stats()["bytes_sent"] - before
    v1, v2 = tree_digest(s2_tiles.v1), tree_digest(s2_tiles.v2)
    assert tree_digest(tmp_path / "data" / NAME) == v2
    copied = {line.split(" ", 1)[1] for line in out.splitlines() if line.startswith(">f")}
    unchanged = {path for path, digest in v2.items() if v1.get(path) == digest}
    assert unchanged and copied == v2.keys() - unchanged, "a file carried into v2 unchanged must keep its mtime"
    changed_bytes = sum((s2_tiles.v2 / path).stat().st_size for path in v2.keys() - unchanged)
    v1_bytes = sum((s2_tiles.v1 / path).stat().st_size for path in v1)
    assert fetched <= v1_bytes + changed_bytes, (fetched, v1_bytes, changed_bytes)


def _two_versions_in_one_second(server, base: Path, attempts: int = 5) -> tuple[str, Path, Path]:
    """A dataset whose v1 and v2 are published within one second (two small ingests take ~0.3 s):
    its data.bin changes between them, its size does not."""
    for attempt in range(attempts):
        name = f"burst-{attempt}"
        v1, v2 = base / name / "v1", base / name / "v2"
        for folder, byte in ((v1, b"1"), (v2, b"2")):
            write_metadata(folder, name)
            (folder / "data.bin").write_bytes(byte * 1000)
        time.sleep(1 - time.time() % 1)  # start at the top of a second
        started = time.time()
        ingest(server, v1)
        ingest(server, v2)
        if int(time.time()) == int(started):
            return name, v1, v2
    pytest.fail(f"no two versions published within one second in {attempts} tries")


def test_rsync_between_versions_of_one_second_needs_checksum(guide_server, mount_factory, places,
                                                             tmp_path: Path) -> None:
    name, v1, v2 = _two_versions_in_one_second(guide_server, tmp_path / "src")
    mnt = mount_factory(guide_server)
    where = places(mnt.path, mnt.cache_dir) | {NAME: name}
    run_shell(recipe("rsync-update", where), tmp_path)
    copy = tmp_path / "data" / name
    assert tree_digest(copy) == tree_digest(v1), "v2's data.bin copied: update the same-second note of docs/guide.md"
    run_shell(recipe("rsync-checksum", where), tmp_path)
    assert tree_digest(copy) == tree_digest(v2)


def test_cp_into_staging_and_flush(guide_server, s2_tiles, mount_factory, places, tmp_path: Path) -> None:
    mnt = mount_factory(guide_server)
    record = mnt.path / "datasets" / NAME
    latest = max(int(entry.name[1:]) for entry in record.iterdir() if entry.name[1:].isdigit())
    new_chips = tmp_path / "data" / "new-chips"
    new_chips.mkdir(parents=True)
    for n in (100, 101):
        (new_chips / f"{n}.bin").write_bytes(bytes([n]) * 70_000)
    out = run_shell(recipe("ingest", places(mnt.path, mnt.cache_dir)), tmp_path)
    assert f"v{latest + 1}" in out.split(), out
    published = tree_digest(record / f"v{latest + 1}")
    assert published == tree_digest(record / f"v{latest}") | {f"chips/{n}.bin": _sha1(bytes([n]) * 70_000)
                                                             for n in (100, 101)}


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_git_repository_in_a_dataset(guide_server, s2_tiles, mount_factory, places, tmp_path: Path) -> None:
    code = tmp_path / "data" / "model-code"
    code.mkdir(parents=True)
    env = dict(os.environ, GIT_AUTHOR_NAME="eo", GIT_AUTHOR_EMAIL="eo@example.com", GIT_COMMITTER_NAME="eo",
               GIT_COMMITTER_EMAIL="eo@example.com")

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(code), *args], env=env, check=True, capture_output=True, text=True,
                              timeout=60).stdout

    git("init", "-q")
    (code / "train.py").write_text("print(1)\n")
    git("add", ".")
    git("commit", "-qm", "first")
    (code / "train.py").write_text("print(2)\n")
    git("commit", "-qam", "second")
    git("gc", "-q")
    assert not any((code / ".git" / "refs" / "heads").iterdir())  # refs packed: the empty folder the recipe is for
    mnt = mount_factory(guide_server)
    out = run_shell(recipe("git-repository", places(mnt.path, mnt.cache_dir)), tmp_path)
    assert out.splitlines()[-2:] == git("log", "--oneline").splitlines(), out  # after the flush's line
    assert (tmp_path / "data" / "code-clone" / "train.py").read_text() == "print(2)\n"


def test_get_where_one_cannot_mount(guide_server, s2_tiles, places, tmp_path: Path) -> None:
    run_shell(recipe("get", places(tmp_path / "no-mount", tmp_path / "no-cache")), tmp_path)
    assert tree_digest(tmp_path / "data" / NAME / "v1") == tree_digest(s2_tiles.v1)
