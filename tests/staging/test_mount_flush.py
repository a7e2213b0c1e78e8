"""What a flush ships, on real mounts against a real server: final names only, carries instead of bytes, names checked."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time

import pytest

from eotdlfs.client.errors import NotFound
from eotdlfs.client.ingest import ingest_folder
from eotdlfs.client.ingest.plan import MULTIPART_THRESHOLD
from tests.client.helpers import cli_env, client, make_folder, run_cli, write_metadata
from tests.reliability.conftest import Proxied
from tests.reliability.faultproxy import FaultProxy
from tests.staging.test_mount_staging import (KIND, flush_cli, publish_and_mount, published_versions, staged,
                                              version_files)

STATUS_WAIT_S = 30.0


def wait_for_flush_message(mount, words: str) -> None:
    """Until the mount's status shows a flush message containing WORDS (bounded)."""
    deadline = time.monotonic() + STATUS_WAIT_S
    while time.monotonic() < deadline:
        if any(words in (r.get("message") or "") for r in mount.status()["staging"]["records"]):
            return
        time.sleep(0.05)
    raise AssertionError(f"no flush message with {words!r}: {mount.status()['staging']}")


def test_a_file_renamed_after_its_writer_closed_is_published_under_its_final_name(tmp_path, repo_server,
                                                                                  mount_factory, unique_name):
    """rsync's order: write `.NAME.XXXXXX`, close it, rename it to NAME; a flush waiting for it must not
    ship the temporary name (the old flush froze the tree the moment the writer closed)."""
    name = unique_name("settle")
    mount, record = publish_and_mount(tmp_path, repo_server, mount_factory, name, 2)
    temp, final = record / ".during.tif.YYh6Fy", record / "during.tif"
    env = cli_env(tmp_path, repo_server.url, repo_server.token("alice"))
    with open(temp, "wb") as writer:
        writer.write(b"rsync's bytes\n" * 1000)
        writer.flush()
        flush = subprocess.Popen([sys.executable, "-m", "eotdlfs", "flush", str(record), "--timeout", "60"],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for_flush_message(mount, "waiting for .during.tif.YYh6Fy")
        except BaseException:
            flush.kill()
            raise
    time.sleep(0.3)  # rsync sets times and modes on the closed file, then renames it
    os.rename(temp, final)
    out, err = flush.communicate(timeout=90)
    assert flush.returncode == 0, (out, err)
    assert published_versions(repo_server, name) == [1, 2]
    files = version_files(repo_server, name, 2)
    assert "during.tif" in files and ".during.tif.YYh6Fy" not in files, sorted(files)
    assert flush_cli(tmp_path, repo_server, record).returncode == 0
    assert published_versions(repo_server, name) == [1, 2]  # nothing was left for another flush


def sent_to_server(server) -> dict:
    """What the server has been sent (upload calls by route) and has served (bytes of route 9)."""
    stats = server.stats()
    return {"uploads": {r: stats["uploads"][r] for r in ("batch", "file", "chunk", "complete")},
            "bytes_served": stats["bytes_sent"]}


def test_rename_copy_and_folder_move_send_no_bytes(tmp_path, repo_server, mount_factory, unique_name):
    """The store is content-addressed: a path pointing to bytes the record has is a carry (route 7 with
    `any_path`); the old flush downloaded a renamed file and uploaded it again."""
    name = unique_name("carry")
    src = make_folder(tmp_path / "src", name, 20)
    (src / "big.bin").write_bytes(os.urandom(MULTIPART_THRESHOLD + 1024))
    ingest_folder(client(repo_server), KIND, src)
    mount = mount_factory(repo_server, ttl=1)
    record = staged(mount, name)
    v1 = version_files(repo_server, name, 1)
    shutil.copy(record / "part3" / "file0003.txt", record / "copy-of-3.txt")  # reads through the mount
    before = sent_to_server(repo_server)
    os.rename(record / "big.bin", record / "moved.bin")
    os.rename(record / "part1", record / "part1-moved")
    result = flush_cli(tmp_path, repo_server, record)
    assert result.returncode == 0, result.stderr
    after = sent_to_server(repo_server)
    assert after["uploads"] == before["uploads"], result.stdout
    assert after["bytes_served"] - before["bytes_served"] <= (src / "metadata.yml").stat().st_size  # read to check it
    v2 = version_files(repo_server, name, 2)
    assert v2["moved.bin"] == v1["big.bin"] and "big.bin" not in v2
    assert v2["copy-of-3.txt"] == v1["part3/file0003.txt"]
    moved = {p: c for p, c in v1.items() if p.startswith("part1/")}
    assert moved and {p.replace("part1/", "part1-moved/", 1): c for p, c in moved.items()} == \
        {p: c for p, c in v2.items() if p.startswith("part1-moved/")}
    assert (mount.path / KIND / name / "v2" / "moved.bin").read_bytes() == (src / "big.bin").read_bytes()


def test_a_sparse_file_crosses_the_wire_compressed(tmp_path, repo_server, mount_factory, unique_name):
    """A 256 MiB hole and 7 bytes: its parts go deflated (route 11's `encoding`), and the server checks the
    SHA-1 of the whole inflated file; the old flush sent every zero."""
    hole, tail = 256 << 20, b"7 bytes"
    name = unique_name("sparse")
    ingest_folder(client(repo_server), KIND, make_folder(tmp_path / "src", name, 2))
    with FaultProxy(repo_server.url) as proxy:
        mount = mount_factory(Proxied(proxy.url, repo_server.token), ttl=1)
        record = staged(mount, name)
        with open(record / "sparse.bin", "wb") as sparse:
            sparse.truncate(hole)
            sparse.seek(hole)
            sparse.write(tail)
        before = proxy.bytes_received
        result = flush_cli(tmp_path, repo_server, record)
        sent = proxy.bytes_received - before
    assert result.returncode == 0, result.stderr
    assert sent < hole // 100, sent
    digest = hashlib.sha1()
    for _ in range(hole >> 20):
        digest.update(bytes(1 << 20))
    digest.update(tail)
    assert version_files(repo_server, name, 2)["sparse.bin"] == digest.hexdigest()
    with open(mount.path / KIND / name / "v2" / "sparse.bin", "rb") as published:
        published.seek(hole - 3)
        assert published.read() == b"\0\0\0" + tail


LONG_FOLDER = "/".join(c * 250 for c in "fghi")  # 1,003 bytes: a name in it makes a path over 1,024
BAD_NAMES = {  # name -> the reason `eotdlfs status` gives, errno
    "back\\slash.tif": ("contains a backslash", errno.EPERM),
    "new\nline.tif": ("contains a control character", errno.EPERM),
    "tab\there.tif": ("contains a control character", errno.EPERM),
    "caf\udce9.tif": ("is not UTF-8 text", errno.EPERM),  # Latin-1 bytes: it was EIO, a traceback in the log
    LONG_FOLDER + "/" + "x" * 30 + ".tif": ("longer than 1024 bytes", errno.ENAMETOOLONG),
}
# the names an older journal can hold: SQLite's text is UTF-8, so a not-UTF-8 name never reached one
JOURNAL_NAMES = [bad for bad in BAD_NAMES if bad.encode("utf-8", "replace").decode() == bad]


def test_names_the_repository_refuses_fail_when_made_and_status_says_why(tmp_path, repo_server, mount_factory,
                                                                         unique_name):
    name = unique_name("names")
    mount, record = publish_and_mount(tmp_path, repo_server, mount_factory, name, 2)
    (record / "ok.tif").write_bytes(b"fine")
    (record / LONG_FOLDER).mkdir(parents=True)
    for bad, (reason, code) in BAD_NAMES.items():
        for make in (lambda p: open(p, "wb").close(), os.mkdir, lambda p: os.rename(record / "ok.tif", p)):
            with pytest.raises(OSError) as refused:
                make(record / bad)
            assert refused.value.errno == code, (bad, refused.value)
    with pytest.raises(OSError) as refused:
        os.mkdir(mount.path / "staging" / KIND / "bad_name")
    assert refused.value.errno == errno.EPERM
    # the log says why, and the status too, once (one refusal asked again at once is listed once)
    moved = subprocess.run(["mv", str(record / "ok.tif"), str(record / "mv\\here.tif")], capture_output=True,
                           text=True, timeout=30)
    assert moved.returncode == 1 and (record / "ok.tif").exists(), moved.stderr
    status = run_cli(cli_env(tmp_path, None, None), "status", str(mount.path)).stdout
    assert f"refused name 'staging/{KIND}/bad_name': not a dataset name" in status, status
    assert "refused name 'staging/" + KIND + "/" + name + "/tab\\there.tif': file path" in status, status
    refused_mv = f"refused name 'staging/{KIND}/{name}/mv\\\\here.tif': file path 'mv\\\\here.tif' contains a backslash"
    assert status.count(refused_mv) == 1, status
    assert f"staging/{KIND}/{name}/mv\\here.tif refused: file path 'mv\\\\here.tif' contains a backslash" \
        in mount.log.read_text()


def test_ordinary_tools_say_a_refused_name_is_not_permitted(tmp_path, repo_server, mount_factory, unique_name):
    """A name the repository refuses was EINVAL, which `mv` prints as "cannot move A to a
    subdirectory of itself"; EPERM reads "Operation not permitted" in every tool, and the mount
    log and `eotdlfs status` name the rule."""
    name = unique_name("tools")
    mount, record = publish_and_mount(tmp_path, repo_server, mount_factory, name, 2)
    local = tmp_path / "local"
    local.mkdir()
    (local / "a.tif").write_bytes(b"fine")
    (local / "b\\.tif").write_bytes(b"refused")
    (record / "ok.tif").write_bytes(b"fine")
    bad = str(record / "x\\y.tif")
    tools = {
        "mv": ["mv", str(record / "ok.tif"), bad],
        "cp": ["cp", str(local / "a.tif"), bad],
        "touch": ["touch", bad],
        "mkdir": ["mkdir", bad],
        "rsync": ["rsync", "-a", f"{local}/", f"{record}/synced/"],
        "mkdir record": ["mkdir", str(mount.path / "staging" / KIND / "bad_name")],
    }
    for tool, command in tools.items():
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and "Operation not permitted" in done.stderr, (tool, done.stderr)
        assert "subdirectory of itself" not in done.stderr and "Invalid argument" not in done.stderr, (tool, done.stderr)
    assert (record / "ok.tif").read_bytes() == b"fine" and (record / "synced" / "a.tif").read_bytes() == b"fine"
    status = run_cli(cli_env(tmp_path, None, None), "status", str(mount.path)).stdout
    assert "contains a backslash" in status and "not a dataset name" in status, status
    assert "x\\\\y.tif' contains a backslash" in mount.log.read_text()


def test_a_flush_names_every_refused_file_before_it_writes_anything(tmp_path, repo_server, mount_factory,
                                                                    unique_name):
    """Names a journal of an older eotdlfs may hold: one flush lists them all, and no record is created."""
    name = unique_name("oldjournal")
    cache = tmp_path / "names-cache"
    mount = mount_factory(repo_server, ttl=1, cache_dir=cache)
    record = staged(mount, name)
    record.mkdir()
    write_metadata(record, name)
    (record / "ok.tif").write_bytes(b"fine")
    mount.unmount()
    folder = cache / "staging" / KIND / name
    upper = next(p.name for p in (folder / "upper").iterdir())
    with sqlite3.connect(folder / "journal.sqlite") as journal:
        for bad in JOURNAL_NAMES:
            journal.execute("INSERT INTO nodes (path, parent, is_dir, upper, mode, mtime_ns) VALUES (?, '', 0, ?, ?, 0)",
                            (bad, upper, 0o100644))
    mount.mount()
    sent = sent_to_server(repo_server)
    result = flush_cli(tmp_path, repo_server, record)
    assert result.returncode == 1 and f"{len(JOURNAL_NAMES)} file name(s) the repository refuses" in result.stderr, \
        result.stderr
    for bad in JOURNAL_NAMES:
        assert BAD_NAMES[bad][0] in result.stderr
    assert sent_to_server(repo_server) == sent
    with pytest.raises(NotFound):
        client(repo_server).record_by_name(KIND, name)
