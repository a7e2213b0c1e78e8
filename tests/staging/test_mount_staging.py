"""Staging on a real mount against a real server: flush = one new version, tools on the staging tree, crash resume."""

from __future__ import annotations

import errno
import filecmp
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import random
import tarfile
import threading
import time
from pathlib import Path

import pytest

from eotdlfs.client.ingest import ingest_folder
from tests.client.helpers import cli_env, client, make_folder, run_cli, write_metadata
from tests.staging.posix_model import FolderBackend, random_program, run_both

KIND = "datasets"
UPLOAD_ROUTES = ("batch", "file", "chunk")


def staged(mount, name: str) -> Path:
    return mount.path / "staging" / KIND / name


def flush_cli(tmp_path: Path, server, folder: Path, user: str = "alice") -> subprocess.CompletedProcess:
    return run_cli(cli_env(tmp_path, server.url, server.token(user)), "flush", str(folder), "--timeout", "60")


def uploads(server) -> int:
    counts = server.stats()["uploads"]
    return sum(counts[r] for r in UPLOAD_ROUTES)


def version_files(server, name: str, version: int) -> dict[str, str]:
    api = client(server)
    record = api.record_by_name(KIND, name)
    return {f["filename"]: f["checksum"] for f in api.files(KIND, record["id"], version)}


def published_versions(server, name: str) -> list[int]:
    record = client(server).record_by_name(KIND, name)
    return sorted(int(v["version_id"]) for v in record["versions"] if not v.get("draft"))


def sha1_tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def publish_and_mount(tmp_path: Path, server, mount_factory, name: str, files: int, **mount_options):
    """NAME published as v1 with FILES small files, and a mount of SERVER (ttl 1 s); (mount, staged record folder)."""
    ingest_folder(client(server), KIND, make_folder(tmp_path / "src", name, files))
    mount = mount_factory(server, ttl=1, **mount_options)
    return mount, staged(mount, name)


@pytest.fixture
def published(tmp_path, repo_server, unique_name):
    """A dataset of 500 files (metadata.yml included) ingested as v1."""
    name = unique_name("stg")
    folder = make_folder(tmp_path / "src", name, 499)
    ingest_folder(client(repo_server), KIND, folder)
    return name, folder


def test_change_one_of_500_files_uploads_one(tmp_path, repo_server, mount_factory, published):
    name, folder = published
    mount = mount_factory(repo_server, ttl=1)
    before_v1 = version_files(repo_server, name, 1)
    (staged(mount, name) / "part0" / "file0000.txt").write_bytes(b"changed in staging\n")
    status = mount.status()["staging"]["records"]
    assert status[0]["changed"] == 1 and status[0]["added"] == 0, status
    sent = uploads(repo_server)
    result = flush_cli(tmp_path, repo_server, staged(mount, name))
    assert result.returncode == 0, result.stderr
    assert "published v2" in result.stdout and "1 uploaded" in result.stdout, result.stdout
    assert uploads(repo_server) - sent == 1
    v2 = version_files(repo_server, name, 2)
    assert len(v2) == 500 and v2["part0/file0000.txt"] == hashlib.sha1(b"changed in staging\n").hexdigest()
    assert version_files(repo_server, name, 1) == before_v1
    assert (mount.path / KIND / name / "v2" / "part0" / "file0000.txt").read_bytes() == b"changed in staging\n"
    assert (mount.path / KIND / name / "v1" / "part0" / "file0000.txt").read_bytes() == \
        (folder / "part0" / "file0000.txt").read_bytes()
    again = flush_cli(tmp_path, repo_server, staged(mount, name))
    assert again.returncode == 0 and "nothing to flush" in again.stdout, again.stdout + again.stderr
    assert published_versions(repo_server, name) == [1, 2]


def test_new_dataset_by_mkdir_and_cp_equals_eotdlfs_ingest(tmp_path, repo_server, mount_factory, unique_name):
    name, twin = unique_name("new"), unique_name("twin")
    mount = mount_factory(repo_server, ttl=1)
    source = make_folder(tmp_path / "new", name, 40)
    (source / "deep" / "er").mkdir(parents=True)
    (source / "deep" / "er" / "big.bin").write_bytes(os.urandom(3 << 20))
    target = staged(mount, name)
    target.mkdir()
    subprocess.run(["cp", "-r", f"{source}/.", str(target)], check=True, timeout=60)
    assert sha1_tree(target) == sha1_tree(source)
    result = flush_cli(tmp_path, repo_server, target)
    assert result.returncode == 0, result.stderr
    twin_folder = tmp_path / "twin"
    shutil.copytree(source, twin_folder)
    write_metadata(twin_folder, twin)
    env = cli_env(tmp_path, repo_server.url, repo_server.token("alice"))
    assert run_cli(env, "ingest", str(twin_folder)).returncode == 0
    ours, theirs = version_files(repo_server, name, 1), version_files(repo_server, twin, 1)
    assert {p: c for p, c in ours.items() if p != "metadata.yml"} == \
        {p: c for p, c in theirs.items() if p != "metadata.yml"}
    assert set(ours) == set(theirs) == set(sha1_tree(source))


def test_flush_without_metadata_says_so(tmp_path, repo_server, mount_factory, unique_name):
    mount = mount_factory(repo_server, ttl=1)
    target = staged(mount, unique_name("nometa"))
    target.mkdir()
    (target / "data.csv").write_text("a,b\n")
    result = flush_cli(tmp_path, repo_server, target)
    assert result.returncode == 1 and "metadata.yml (nor a STAC catalog.json)" in result.stderr, result.stderr
    status = run_cli(cli_env(tmp_path, None, None), "status", str(mount.path)).stdout
    assert "flush failed" in status and "metadata.yml (nor a STAC catalog.json)" in status, status


def test_fallocate_reserves_extends_and_punches_as_on_a_disk(tmp_path, repo_server, mount_factory, published):
    """`fallocate` (the tool; rsync --preallocate, downloaders) failed with EOPNOTSUPP and left an empty file."""
    name, folder = published
    mount = mount_factory(repo_server, ttl=1)
    target = staged(mount, name)
    subprocess.run(["fallocate", "-l", "3M", str(target / "reserved.bin")], check=True)
    data = os.urandom(1 << 20)
    (target / "punched.bin").write_bytes(data)
    subprocess.run(["fallocate", "--punch-hole", "--offset", "4096", "--length", "65536", str(target / "punched.bin")],
                   check=True)
    old = (folder / "part0" / "file0000.txt").read_bytes()
    subprocess.run(["fallocate", "-l", "100000", str(target / "part0" / "file0000.txt")], check=True)  # copied up
    expected = {"reserved.bin": bytes(3 << 20), "punched.bin": data[:4096] + bytes(65536) + data[4096 + 65536:],
                "part0/file0000.txt": old + bytes(100000 - len(old))}
    assert {rel: (target / rel).read_bytes() for rel in expected} == expected
    assert os.stat(target / "punched.bin").st_blocks * 512 < len(data)  # the hole is a hole
    result = flush_cli(tmp_path, repo_server, target)
    assert result.returncode == 0, result.stderr
    assert {rel: (mount.path / KIND / name / "v2" / rel).read_bytes() for rel in expected} == expected


def test_tools_on_the_staging_tree(tmp_path, repo_server, mount_factory, published):
    name, folder = published
    mount = mount_factory(repo_server, ttl=1)
    target = staged(mount, name)
    extra = tmp_path / "extra"
    (extra / "sub").mkdir(parents=True)
    for i in range(20):
        (extra / "sub" / f"r{i}.txt").write_text(f"rsync {i}\n" * i)
    run = lambda *cmd: subprocess.run(cmd, check=True, capture_output=True, timeout=60)  # noqa: E731
    run("rsync", "-a", f"{extra}/", str(target / "from-rsync"))
    with tarfile.open(tmp_path / "t.tar", "w") as tar:
        tar.add(extra / "sub", arcname="tarred")
    run("tar", "xf", str(tmp_path / "t.tar"), "-C", str(target))
    run("cp", "-r", str(extra / "sub"), str(target / "copied"))
    # an editor: write a temp file, fsync, rename it over the original
    tmp = target / "part1" / ".file0001.txt.swp"
    with open(tmp, "wb") as f:
        f.write(b"edited\n")
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, target / "part1" / "file0001.txt")
    os.rename(target / "part2", target / "copied" / "part2-moved")
    subprocess.run(["touch", "-d", "@981173106", str(target / "part3" / "file0003.txt")], check=True)
    subprocess.run(["touch", "-a", str(target / "part3" / "file0003.txt")], check=True)  # mtime stays
    assert (target / "part3" / "file0003.txt").stat().st_mtime == 981173106
    before = (target / "part5" / "file0005.txt").read_bytes()
    subprocess.run(["sh", "-c", f"echo appended >> '{target / 'part5' / 'file0005.txt'}'"], check=True)
    assert (target / "part5" / "file0005.txt").read_bytes() == before + b"appended\n"
    subprocess.run(["touch", str(target / "part4" / "file0004.txt")], check=True)  # now
    assert abs((target / "part4" / "file0004.txt").stat().st_mtime - time.time()) < 60
    assert not filecmp.dircmp(extra, target / "from-rsync").diff_files
    assert (target / "tarred" / "r3.txt").read_text() == "rsync 3\n" * 3
    expected = sha1_tree(target)
    result = flush_cli(tmp_path, repo_server, target)
    assert result.returncode == 0, result.stderr
    assert version_files(repo_server, name, 2) == expected
    assert sha1_tree(mount.path / KIND / name / "v2") == expected


def test_times_set_with_the_other_one_omitted_are_kept(tmp_path, repo_server, mount_factory, unique_name):
    """`touch -m`, `touch -m -d` and `tar x` call utimensat with UTIME_OMIT for the access time
    (libfuse 2 drops such calls unless the file system says it handles UTIME_OMIT)."""
    mount = mount_factory(repo_server, ttl=1)
    target = staged(mount, unique_name("times"))
    target.mkdir()
    dated, now = target / "dated.txt", target / "now.txt"
    dated.write_text("dated\n")
    now.write_text("now\n")
    os.utime(now, (1_000_000_000, 1_000_000_000))
    subprocess.run(["touch", "-m", "-d", "@981173106", str(dated)], check=True, timeout=30)
    subprocess.run(["touch", "-m", str(now)], check=True, timeout=30)
    assert dated.stat().st_mtime == 981173106
    assert abs(now.stat().st_mtime - time.time()) < 60
    source = tmp_path / "old.txt"
    source.write_text("from a tar\n")
    os.utime(source, (1_200_000_000, 1_200_000_000))
    with tarfile.open(tmp_path / "old.tar", "w") as tar:
        tar.add(source, arcname="old.txt")
    subprocess.run(["tar", "xf", str(tmp_path / "old.tar"), "-C", str(target)], check=True, timeout=30)
    assert (target / "old.txt").stat().st_mtime == 1_200_000_000


@pytest.mark.parametrize("seed", [11, 12])
def test_random_operations_on_the_mount_agree_with_a_local_folder(tmp_path, repo_server, mount_factory,
                                                                  unique_name, seed):
    name = unique_name("rnd")
    source = make_folder(tmp_path / "src", name, 12)
    ingest_folder(client(repo_server), KIND, source)
    mount = mount_factory(repo_server, ttl=1)
    reference = tmp_path / "reference"
    shutil.copytree(source, reference)
    ops = random_program(seed, 300, FolderBackend(reference).tree())
    # metadata.yml stays, so the tree can be flushed half way
    ops = [op for op in ops if "metadata.yml" not in " ".join(map(str, op.args[:2]))]
    half = len(ops) // 2
    run_both(ops[:half], FolderBackend(reference), FolderBackend(staged(mount, name)))
    result = flush_cli(tmp_path, repo_server, staged(mount, name))
    assert result.returncode == 0, result.stderr
    assert sha1_tree(mount.path / KIND / name / "v2") == sha1_tree(reference)
    run_both(ops[half:], FolderBackend(reference), FolderBackend(staged(mount, name)))


def flush_under_way(tmp_path: Path, server, folder: Path) -> subprocess.Popen:
    """`eotdlfs flush FOLDER` started, once the server has received a part of a file (FOLDER holds one over
    16 MiB); the command waits on, its output piped."""
    chunks = server.stats()["uploads"]["chunk"]  # the session server counts every test's uploads
    waiting = subprocess.Popen([sys.executable, "-m", "eotdlfs", "flush", str(folder), "--timeout", "60"],
                               env=cli_env(tmp_path, server.url, None), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while server.stats()["uploads"]["chunk"] == chunks and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.stats()["uploads"]["chunk"] > chunks, "the flush sent no part within 30 s"
    return waiting


def test_kill_during_flush_then_remount_gives_exactly_one_version(tmp_path, repo_server, mount_factory, published):
    name, _ = published
    cache = tmp_path / "kill-cache"
    mount = mount_factory(repo_server, ttl=1, cache_dir=cache)
    target = staged(mount, name)
    big = os.urandom(48 << 20)  # multipart: the flush takes long enough to be killed in the middle
    (target / "big.bin").write_bytes(big)
    (target / "part3" / "file0003.txt").write_text("staged before the crash\n")
    expected = sha1_tree(target)
    waiting = flush_under_way(tmp_path, repo_server, target)  # killed in the middle of the upload
    os.kill(mount.pid, signal.SIGKILL)
    _, stderr = waiting.communicate(timeout=30)
    # what the waiting `eotdlfs flush` says (it said 'Software caused connection abort')
    assert waiting.returncode == 1 and "the mount stopped during the flush" in stderr and "resumes" in stderr, stderr
    mount.unmount()
    assert published_versions(repo_server, name) == [1]  # the draft is not visible
    mount.mount()
    result = flush_cli(tmp_path, repo_server, target)
    assert result.returncode == 0, result.stderr
    assert published_versions(repo_server, name) == [1, 2]
    assert version_files(repo_server, name, 2) == expected
    assert hashlib.sha1((mount.path / KIND / name / "v2" / "big.bin").read_bytes()).digest() == \
        hashlib.sha1(big).digest()


def test_unmount_during_a_flush_lets_it_finish_and_the_waiting_flush_says_so(tmp_path, repo_server, mount_factory,
                                                                              published):
    """An unmount lets a running flush finish (up to 10 s) before the mount process exits; the waiting
    `eotdlfs flush` then says what was published, where it said "the mount stopped during the flush"."""
    name, _ = published
    mount = mount_factory(repo_server, ttl=1)
    target = staged(mount, name)
    (target / "big.bin").write_bytes(os.urandom(24 << 20))  # multipart: the flush is seen under way
    expected = sha1_tree(target)
    waiting = flush_under_way(tmp_path, repo_server, target)
    mount.unmount()  # fusermount -u, then the mount process exits once the flush ended
    stdout, stderr = waiting.communicate(timeout=60)
    assert published_versions(repo_server, name) == [1, 2]
    assert version_files(repo_server, name, 2) == expected
    assert waiting.returncode == 0 and "published v2" in stdout, stdout + stderr


def test_flush_of_the_current_folder_names_the_record(tmp_path, repo_server, mount_factory, published):
    """`cd MNT/staging/datasets/NAME; eotdlfs flush .` said ": published v2" (the name of `.` is empty)."""
    name, _ = published
    mount = mount_factory(repo_server, ttl=1)
    target = staged(mount, name)
    (target / "part1" / "here.txt").write_text("flushed from inside\n")
    done = subprocess.run([sys.executable, "-m", "eotdlfs", "flush", "..", "--timeout", "60"], cwd=target / "part1",
                          env=cli_env(tmp_path, repo_server.url, None), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith(f"{name}: published v2"), done.stdout + done.stderr


def test_someone_elses_dataset_is_refused_and_kept(tmp_path, repo_server, mount_factory, published):
    name, _ = published
    mount = mount_factory(repo_server, ttl=1, user="bob")
    target = staged(mount, name)
    (target / "bob.txt").write_text("not yours\n")
    result = flush_cli(tmp_path, repo_server, target, user="bob")
    assert result.returncode == 1 and "alice" in result.stderr, result.stderr
    assert (target / "bob.txt").read_text() == "not yours\n"
    assert published_versions(repo_server, name) == [1]


def test_server_down_during_flush_keeps_the_stage_and_a_later_flush_works(tmp_path, fresh_server, mount_factory,
                                                                          unique_name):
    name = unique_name("down")
    mount, target = publish_and_mount(tmp_path, fresh_server, mount_factory, name, 5)
    (target / "new.txt").write_text("survives\n")
    fresh_server.stop()
    try:
        result = flush_cli(tmp_path, fresh_server, target)
        assert result.returncode == 1, result.stdout
    finally:
        fresh_server.start()
    assert (target / "new.txt").read_text() == "survives\n"
    records = mount.status()["staging"]["records"]
    assert records[0]["flush"] == "failed" and records[0]["added"] == 1
    result = flush_cli(tmp_path, fresh_server, target)
    assert result.returncode == 0, result.stderr
    assert published_versions(fresh_server, name) == [1, 2]


def test_status_says_the_server_is_unreachable_once_a_flush_found_it_so(tmp_path, fresh_server, mount_factory,
                                                                        unique_name):
    """`eotdlfs flush` saying "cannot reach the repository" and `eotdlfs status` saying "reachable: yes"
    next to it (the listing's last refresh, up to the TTL old): a flush's own contact counts."""
    name = unique_name("reach")
    ingest_folder(client(fresh_server), KIND, make_folder(tmp_path / "src", name, 2))
    mount = mount_factory(fresh_server, ttl=60)
    target = staged(mount, name)
    assert mount.status()["server_reachable"] is True
    (target / "new.txt").write_text("kept\n")
    fresh_server.stop()
    try:
        result = flush_cli(tmp_path, fresh_server, target)
        assert result.returncode == 1 and "cannot reach the repository" in result.stderr, result.stderr
        assert mount.status()["server_reachable"] is False
    finally:
        fresh_server.start()
    assert flush_cli(tmp_path, fresh_server, target).returncode == 0
    assert mount.status()["server_reachable"] is True


def test_a_sparse_staged_file_counts_only_its_data_blocks(tmp_path, repo_server, mount_factory, unique_name):
    """`du` of a staged file with a 64 MiB hole counts its data, as on the disk holding it, so `du` is
    right and `cp` (which takes few blocks for a large size as a sign of holes) copies it out sparse."""
    name = unique_name("holes")
    mount = mount_factory(repo_server)
    target = staged(mount, name)
    target.mkdir()
    fd = os.open(target / "holes.bin", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.pwrite(fd, b"end", 64 << 20)
    finally:
        os.close(fd)
    assert os.stat(target / "holes.bin").st_blocks < 1024  # under 512 KiB of the 64 MiB
    subprocess.run(["cp", str(target / "holes.bin"), str(tmp_path / "copy.bin")], check=True, timeout=60)
    copy = os.stat(tmp_path / "copy.bin")
    assert copy.st_size == (64 << 20) + 3 and copy.st_blocks < 1024


def test_disk_full_gives_enospc_and_loses_nothing_staged(tmp_path, repo_server, mount_factory, unique_name):
    cache = tmp_path / "full-cache"
    (cache / "staging").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(cache / "staging")], check=True)
    mount = None
    try:
        mount = mount_factory(repo_server, ttl=1, cache_dir=cache)
        name = unique_name("full")
        target = staged(mount, name)
        target.mkdir()
        write_metadata(target, name)
        (target / "small.txt").write_text("precious\n")
        with pytest.raises(OSError) as info:
            with open(target / "huge.bin", "wb") as f:
                for _ in range(8):
                    f.write(os.urandom(1 << 20))
        assert info.value.errno == errno.ENOSPC
        assert (target / "small.txt").read_text() == "precious\n"
        os.unlink(target / "huge.bin")
        result = flush_cli(tmp_path, repo_server, target)
        assert result.returncode == 0, result.stderr
        assert set(version_files(repo_server, name, 1)) == {"metadata.yml", "small.txt"}
    finally:
        if mount is not None:
            mount.unmount()
        subprocess.run(["umount", "-l", str(cache / "staging")], check=False)


@pytest.mark.parametrize("token, says", [("", "Not authenticated"), ("not-a-jwt", "Invalid token")])
def test_flush_without_valid_credentials_fails_and_keeps_the_stage(tmp_path, repo_server, mount_factory, published,
                                                                   monkeypatch, token, says):
    name, _ = published
    monkeypatch.setattr(repo_server, "token", lambda user: token)
    mount = mount_factory(repo_server, ttl=1)
    target = staged(mount, name)
    (target / "new.txt").write_text("staged\n")
    result = flush_cli(tmp_path, repo_server, target)
    assert result.returncode == 1 and says in result.stderr and "EOTDL_TOKEN" in result.stderr, result.stderr
    assert (target / "new.txt").read_text() == "staged\n"
    assert published_versions(repo_server, name) == [1]


def test_autoflush_publishes_after_idle_seconds(tmp_path, repo_server, mount_factory, published):
    name, _ = published
    mount = mount_factory(repo_server, ttl=1, extra_args=("--autoflush", "1"))
    (staged(mount, name) / "auto.txt").write_text("flushed by itself\n")
    deadline = time.monotonic() + 60
    while published_versions(repo_server, name) == [1] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert published_versions(repo_server, name) == [1, 2]
    assert "auto.txt" in version_files(repo_server, name, 2)


def test_flush_waits_for_a_file_open_for_writing_and_names_it(tmp_path, repo_server, mount_factory, published):
    name, _ = published
    mount = mount_factory(repo_server, ttl=1)
    target = staged(mount, name)
    env = cli_env(tmp_path, repo_server.url, repo_server.token("alice"))
    with open(target / "growing.log", "wb") as writer:
        writer.write(b"first line\n")
        writer.flush()
        flush = subprocess.Popen([sys.executable, "-m", "eotdlfs", "flush", str(target)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(1.5)
            assert flush.poll() is None  # still waiting for the writer
            writer.write(b"second line\n")
        except BaseException:
            flush.kill()
            raise
    out, err = flush.communicate(timeout=60)
    assert flush.returncode == 0 and "waiting for growing.log" in err, (out, err)
    assert (mount.path / KIND / name / "v2" / "growing.log").read_bytes() == b"first line\nsecond line\n"


def test_a_new_model_is_staged_and_flushed_like_a_dataset(tmp_path, repo_server, mount_factory, unique_name):
    name = unique_name("model")
    mount = mount_factory(repo_server, ttl=1)
    target = mount.path / "staging" / "models" / name
    target.mkdir()
    write_metadata(target, name)
    (target / "weights.bin").write_bytes(b"\x00\x01" * 5000)
    result = flush_cli(tmp_path, repo_server, target)
    assert result.returncode == 0, result.stderr
    assert (mount.path / "models" / name / "v1" / "weights.bin").read_bytes() == b"\x00\x01" * 5000


def test_invalid_metadata_fails_naming_the_field_and_sends_nothing(tmp_path, repo_server, mount_factory,
                                                                    published):
    name, _ = published
    mount = mount_factory(repo_server, ttl=1)
    target = staged(mount, name)
    write_metadata(target, name, source="ftp://not-http.example")
    sent = uploads(repo_server)
    result = flush_cli(tmp_path, repo_server, target)
    assert result.returncode == 1 and "source" in result.stderr and "http" in result.stderr, result.stderr
    assert uploads(repo_server) == sent and published_versions(repo_server, name) == [1]


@pytest.mark.slow  # about 30 s
def test_flushes_while_writers_keep_writing_lose_nothing(tmp_path, repo_server, mount_factory, published):
    name, _ = published
    mount = mount_factory(repo_server, ttl=1)
    target = staged(mount, name)
    expected: dict[str, dict[str, bytes | None]] = {}
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(number: int) -> None:
        rng, mine = random.Random(number), expected.setdefault(f"w{number}", {})
        folder = target / f"w{number}"
        folder.mkdir()
        try:
            for step in range(2000):
                if stop.is_set():
                    return
                path = f"f{rng.randrange(12)}.bin"
                if rng.random() < 0.15 and mine.get(path) is not None:
                    os.unlink(folder / path)
                    mine[path] = None
                else:
                    data = f"{number}-{step}-".encode() * rng.randrange(1, 400)
                    tmp = folder / f".{path}.tmp"
                    tmp.write_bytes(data)
                    os.rename(tmp, folder / path)  # as editors and rsync do
                    mine[path] = data
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(3):
            result = flush_cli(tmp_path, repo_server, target)
            assert result.returncode == 0, result.stderr
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert not errors, errors
    result = flush_cli(tmp_path, repo_server, target)
    assert result.returncode == 0, result.stderr
    wanted = {f"{w}/{p}": hashlib.sha1(d).hexdigest() for w, files in expected.items()
              for p, d in files.items() if d is not None}
    latest = published_versions(repo_server, name)[-1]
    shipped = {p: c for p, c in version_files(repo_server, name, latest).items() if p.startswith("w")}
    assert shipped == wanted
    assert {p: c for p, c in sha1_tree(target).items() if p.startswith("w")} == wanted


def test_staged_changes_survive_kill_and_remount(tmp_path, repo_server, mount_factory, published):
    name, _ = published
    mount = mount_factory(repo_server, ttl=1, cache_dir=tmp_path / "survive-cache")
    target = staged(mount, name)
    (target / "part0" / "file0000.txt").write_text("changed before the crash\n")
    (target / "new-folder").mkdir()
    (target / "new-folder" / "new.txt").write_text("new before the crash\n")
    os.rename(target / "part1", target / "part1-renamed")
    os.unlink(target / "part2" / "file0002.txt")
    before = sha1_tree(target)
    os.kill(mount.pid, signal.SIGKILL)
    mount.unmount()
    mount.mount()
    assert sha1_tree(target) == before
    record = mount.status()["staging"]["records"][0]
    assert (record["changed"], record["deleted"]) == (1, 1 + len(list((target / "part1-renamed").iterdir()))), record


def test_staged_bytes_deleted_behind_the_mount_give_eio_naming_the_file(tmp_path, repo_server, mount_factory,
                                                                          unique_name):
    name = unique_name("lost")
    mount, record = publish_and_mount(tmp_path, repo_server, mount_factory, name, 2)
    (record / "notes.txt").write_text("only here\n")
    uppers = list(mount.cache_dir.glob(f"staging/{KIND}/{name}/upper/*"))
    assert len(uppers) == 1
    uppers[0].unlink()  # a cleaner run over the cache dir, say

    assert "notes.txt" in os.listdir(record)
    with pytest.raises(OSError) as lost:
        (record / "notes.txt").read_bytes()
    assert lost.value.errno == errno.EIO
    result = flush_cli(tmp_path, repo_server, record)
    assert result.returncode == 1 and f"{KIND}/{name}/notes.txt" in result.stderr, result.stderr
    assert str(uppers[0]) not in result.stderr
    assert f"{KIND}/{name}/notes.txt" in mount.status()["staging"]["records"][0]["error"]
    log = mount.log.read_text()
    assert f"{KIND}/{name}/notes.txt lost its bytes: {uppers[0]}" in log

    (record / "notes.txt").unlink()  # what the error says to do
    assert "notes.txt" not in os.listdir(record)
    assert flush_cli(tmp_path, repo_server, record).returncode == 0 and published_versions(repo_server, name) == [1]


def test_touch_of_a_published_file_is_no_pending_change(tmp_path, repo_server, mount_factory, unique_name):
    """`touch` opens a published file for writing (a copy-up) but writes nothing: status and flush
    agree that nothing is pending; the first write after it makes it a change again."""
    name = unique_name("touch")
    mount, folder = publish_and_mount(tmp_path, repo_server, mount_factory, name, 3)
    target = folder / "part0" / "file0000.txt"
    subprocess.run(["touch", str(target)], check=True)
    record = mount.status()["staging"]["records"][0]
    assert (record["added"], record["changed"], record["deleted"], record["bytes_pending"]) == (0, 0, 0, 0), record
    result = flush_cli(tmp_path, repo_server, folder)
    assert result.returncode == 0 and "nothing to flush" in result.stdout, result.stdout + result.stderr
    with open(target, "r+b") as f:  # same size, other bytes: a change however it was opened
        f.write(b"X")
    record = mount.status()["staging"]["records"][0]
    assert (record["changed"], record["bytes_pending"]) == (1, target.stat().st_size), record
    assert "published v2" in flush_cli(tmp_path, repo_server, folder).stdout
