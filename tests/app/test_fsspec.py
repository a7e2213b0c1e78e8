"""`eotdl://` through fsspec against a real server: the mount's tree, lazy checked reads, the shared
block cache, `put` as ingest, and every other write refused."""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing
import os
import pickle
import subprocess
import sys
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import fsspec
import pytest

import eotdlfs

from eotdlfs.app.embedded import SAMPLE_DIR
from eotdlfs.app.fsspec_eotdl import EotdlFileSystem
from eotdlfs.fs import pieces as pieces_module
from eotdlfs.fs.pieces import piece_key
from eotdlfs.repository import Unreachable
from eotdlfs.fs.namespace import LIST_LATER_S
from tests.client.helpers import cli_env
from tests.conftest import _free_port as free_port
from tests.fs.datasets import ingest, ingest_one_file, make_folder, tree_digest, write_metadata
from tests.reliability.faultproxy import FaultProxy
from tests.stac.catalogs import write_catalog, write_json

MiB = 1 << 20


def eotdl_fs(server, cache_dir: Path, url: str | None = None) -> EotdlFileSystem:
    return EotdlFileSystem(api_url=url or server.url, token=server.token("alice"), cache_dir=str(cache_dir),
                           skip_instance_cache=True)


@pytest.fixture
def two_versions(repo_server, unique_name, tmp_path):
    """A record NAME with v1 (make_folder) and v2 (labels.csv changed, tile_4 removed); (NAME, v1, v2)."""
    name = unique_name("fss")
    v1 = make_folder(tmp_path / "v1", name)
    ingest(repo_server, v1)
    v2 = make_folder(tmp_path / "v2", name)
    (v2 / "labels.csv").write_text("id,label\n1,b\n")
    (v2 / "images" / "tile_4.bin").unlink()
    ingest(repo_server, v2)
    return name, v1, v2


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def test_fsspec_open_and_filesystem_find_the_class_through_the_entry_point(repo_server, two_versions, tmp_path):
    name, v1, _ = two_versions
    options = {"api_url": repo_server.url, "cache_dir": str(tmp_path / "cache")}
    assert fsspec.get_filesystem_class("eotdl") is EotdlFileSystem
    with fsspec.open(f"eotdl://datasets/{name}/v1/labels.csv", "rt", **options) as f:
        assert f.read() == (v1 / "labels.csv").read_text()
    fs = fsspec.filesystem("eotdl", **options)
    assert fs.cat_file(f"eotdl://datasets/{name}/v1/images/2023/big.bin") == (v1 / "images/2023/big.bin").read_bytes()


def test_a_repository_down_is_not_answered_from_another_ones_kept_lists(repo_server, two_versions, tmp_path):
    """The cache dir (shared with the mount by default) keeps lists per repository: eotdl:// of one
    that is down said FileNotFoundError after a warning "using the list from before", another's."""
    name, v1, _ = two_versions
    up = eotdl_fs(repo_server, tmp_path / "cache")
    assert "labels.csv" in {Path(p).name for p in up.ls(f"datasets/{name}/v1", detail=False)}  # its whole list kept
    assert up.cat_file(f"datasets/{name}/v1/labels.csv") == (v1 / "labels.csv").read_bytes()
    down = eotdl_fs(repo_server, tmp_path / "cache", url=f"http://127.0.0.1:{free_port()}/")
    for look in (down.ls, down.cat_file):
        with pytest.raises(Unreachable, match="cannot reach the repository"):
            look(f"datasets/{name}/v1/labels.csv")


def test_ls_with_detail_shows_the_mounts_tree(repo_server, two_versions, tmp_path):
    name, v1, v2 = two_versions
    fs = eotdl_fs(repo_server, tmp_path / "cache")
    assert fs.ls("", detail=False) == ["datasets", "models"]
    assert f"datasets/{name}" in fs.ls("datasets", detail=False)
    versions = {e["name"]: e for e in fs.ls(f"datasets/{name}")}
    assert set(versions) == {f"datasets/{name}/{v}" for v in ("v1", "v2", "latest")}
    assert versions[f"datasets/{name}/v1"]["type"] == "directory" and versions[f"datasets/{name}/v1"]["version"] == 1
    latest = versions[f"datasets/{name}/latest"]
    assert (latest["type"], latest["destination"], latest["version"]) == ("link", f"datasets/{name}/v2", 2)
    top = {e["name"].rsplit("/", 1)[1]: e for e in fs.ls(f"eotdl://datasets/{name}/v1/")}
    assert set(top) == {"metadata.yml", "images", "labels.csv", "empty.txt", "name with spaces.txt"}
    labels = top["labels.csv"]
    data = (v1 / "labels.csv").read_bytes()
    assert (labels["type"], labels["size"], labels["checksum"], labels["version"]) == ("file", len(data), _sha1(data), 1)
    assert top["images"]["type"] == "directory"
    info = fs.info(f"datasets/{name}/latest/labels.csv")
    assert (info["size"], info["checksum"], info["version"]) == (len((v2 / "labels.csv").read_bytes()),
                                                                 _sha1((v2 / "labels.csv").read_bytes()), 2)
    assert fs.info(f"datasets/{name}/latest")["islink"] and fs.isdir(f"datasets/{name}/latest")
    assert fs.isfile(f"datasets/{name}/v1/empty.txt") and not fs.exists(f"datasets/{name}/v3")
    carried = [fs.modified(f"datasets/{name}/{v}/images/tile_0.bin") for v in ("v1", "v2")]
    assert carried[0] == carried[1] and carried[0].timestamp() == fs.info(f"datasets/{name}/v1/images/tile_0.bin")["mtime"]
    assert fs.modified(f"datasets/{name}/v2/labels.csv") > carried[0]  # changed in v2: v2's time, as on the mount
    assert fs.created(f"datasets/{name}/v2/images/tile_0.bin") == carried[0]  # made once, never changed
    with pytest.raises(FileNotFoundError):
        fs.info(f"datasets/{name}/v1/nothing-here")


def test_find_and_glob(repo_server, two_versions, tmp_path):
    name, v1, v2 = two_versions
    fs = eotdl_fs(repo_server, tmp_path / "cache")
    local = sorted(str(p.relative_to(v2)) for p in v2.rglob("*") if p.is_file())
    assert fs.find(f"datasets/{name}/v2") == [f"datasets/{name}/v2/{p}" for p in local]
    assert fs.find(f"datasets/{name}/latest") == [f"datasets/{name}/latest/{p}" for p in local]
    # latest is a link, not walked into: the record's files are its versions' files, once each
    assert len(fs.find(f"datasets/{name}")) == len(local) + sum(1 for p in v1.rglob("*") if p.is_file()) + 1
    assert fs.glob(f"datasets/{name}/v1/images/tile_*.bin") == [f"datasets/{name}/v1/images/tile_{i}.bin"
                                                                  for i in range(5)]
    assert fs.glob(f"eotdl://datasets/{name}/*/images/tile_4.bin") == [f"datasets/{name}/v1/images/tile_4.bin"]
    fs.get(f"datasets/{name}/latest/", str(tmp_path / "copy") + "/", recursive=True)
    assert tree_digest(tmp_path / "copy") == tree_digest(v2)


def test_glob_follows_latest_as_a_shell_glob_follows_a_link(repo_server, two_versions, tmp_path):
    """`datasets/*/latest/labels.csv`, the latest labels of every dataset, matches as `ls` of the same
    pattern on the mount does (a glob follows links; only `find` does not walk into latest)."""
    name, v1, v2 = two_versions
    fs = eotdl_fs(repo_server, tmp_path / "cache")
    assert f"datasets/{name}/latest/labels.csv" in fs.glob("datasets/*/latest/labels.csv")
    assert fs.glob(f"datasets/{name}/*/labels.csv") == [f"datasets/{name}/{v}/labels.csv"
                                                        for v in ("latest", "v1", "v2")]
    assert fs.ls(f"datasets/{name}", detail=True)[-1]["type"] == "link"  # find still does not walk it


def test_seek_and_ranged_reads(repo_server, two_versions, tmp_path):
    name, v1, _ = two_versions
    data = (v1 / "images/2023/big.bin").read_bytes()
    fs = eotdl_fs(repo_server, tmp_path / "cache")
    path = f"datasets/{name}/v1/images/2023/big.bin"
    assert fs.cat_file(path, start=MiB - 10, end=2 * MiB + 10) == data[MiB - 10:2 * MiB + 10]
    assert fs.cat_file(path, start=-17) == data[-17:]
    with fs.open(path) as f:
        assert f.size == len(data) and f.seekable()
        f.seek(2 * MiB)
        assert f.read(100) == data[2 * MiB:2 * MiB + 100] and f.tell() == 2 * MiB + 100
        f.seek(-5, os.SEEK_END)
        assert f.read() == data[-5:] and f.read(10) == b""
        f.seek(12345)
        buffer = bytearray(70_000)
        assert f.readinto(buffer) == 70_000 and bytes(buffer) == data[12345:12345 + 70_000]
        f.seek(0)
        assert f.read() == data


def test_a_multi_range_read_hands_back_the_buffers_it_read_into(repo_server, unique_name, tmp_path):
    """GDAL copies a multi-range read's bytes out at once: each range comes back in the buffer it
    was read into, allocated once, not copied into `bytes` first (a second pass over every byte of
    a window). Counted as the memory the read allocates, its bytes already in memory."""
    name = unique_name("ranges")
    data = ingest_one_file(repo_server, tmp_path / "src", name, "a.bin", 6 * MiB)
    fs = eotdl_fs(repo_server, tmp_path / "cache")
    ranges = ([MiB + 4321, 4 * MiB + 99], [2 * MiB, MiB])
    with fs.connection.open(f"datasets/{name}/v1/a.bin") as f:
        f.get_byte_ranges(*ranges)  # fetched: the read below copies from memory
        tracemalloc.start()
        try:
            got = f.get_byte_ranges(*ranges)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert [bytes(g) for g in got] == [data[o:o + n] for o, n in zip(*ranges)]
    assert peak < 3 * MiB + (512 << 10), peak  # the 3 MiB asked for, once (it was twice)


def test_a_multi_range_read_reuses_the_buffers_no_one_holds_and_never_those_a_caller_kept(
        repo_server, unique_name, tmp_path):
    """A tile row's new `bytearray` is zeroed on fresh pages (~0.4 ms per MiB, a fifth of a cold window
    through eotdl://): the last read's buffers, which GDAL copied out of and let go, are read into
    again; a buffer its caller still holds is never written again."""
    name = unique_name("reuse")
    data = ingest_one_file(repo_server, tmp_path / "src", name, "a.bin", 6 * MiB)
    fs = eotdl_fs(repo_server, tmp_path / "cache")
    first, second = ([MiB + 4321, 4 * MiB + 99], [2 * MiB, MiB]), ([3 * MiB, 7], [MiB, 2 * MiB])
    with fs.connection.open(f"datasets/{name}/v1/a.bin") as f:
        kept = f.get_byte_ranges(*first)
        f.get_byte_ranges(*second)  # fetched; read into new buffers, the first read's being held
        assert [bytes(g) for g in kept] == [data[o:o + n] for o, n in zip(*first)]
        tracemalloc.start()
        try:
            got = f.get_byte_ranges(*second)  # into the buffers of the read before, let go
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert [bytes(g) for g in got] == [data[o:o + n] for o, n in zip(*second)]
        assert [bytes(g) for g in kept] == [data[o:o + n] for o, n in zip(*first)]
    assert peak < 256 << 10, peak  # 3 MiB asked for, none of it allocated


def test_a_multi_range_reads_missing_pieces_come_in_as_few_requests_as_they_allow(repo_server, unique_name, tmp_path):
    """One multi-range read (GDAL's tile rows of a window) fetches the pieces missing from all its
    ranges together: ranges in adjacent or nearly adjacent 64 KiB pieces share a request, as
    /vsicurl/ joins them; read range by range, each was a request of its own. Counted at the server."""
    name = unique_name("scattered")
    data = ingest_one_file(repo_server, tmp_path / "src", name, "a.bin", 16 * MiB)
    fs = eotdl_fs(repo_server, tmp_path / "cache")
    # in pieces 1-2; 48-51 and 52 (adjacent); 96-97; 147 and 149 (one piece apart): four requests.
    # Far enough apart that none looks like a sequential run, which earns whole blocks.
    offsets = [100_000, 3 * MiB + 10, 3 * MiB + 300_000, 6 * MiB + 5, 9 * MiB + 200_000, 9 * MiB + 330_000]
    sizes = [50_000, 200_000, 10_000, 70_000, 1000, 1000]
    with fs.connection.open(f"datasets/{name}/v1/a.bin") as f:
        before = repo_server.stats()["downloads"]
        got = f.get_byte_ranges(offsets, sizes)
        requests = repo_server.stats()["downloads"] - before
    assert [bytes(g) for g in got] == [data[o:o + n] for o, n in zip(offsets, sizes)]
    assert requests == 4, requests


def test_a_multi_range_read_of_blocks_held_whole_fetches_nothing_again(repo_server, unique_name, tmp_path):
    """Ranges in blocks the cache holds whole (the file was read through before) are read back from
    them, not fetched again in pieces; the blocks of all the ranges are looked up at once."""
    name = unique_name("held")
    data = ingest_one_file(repo_server, tmp_path / "src", name, "a.bin", 6 * MiB)
    fs = eotdl_fs(repo_server, tmp_path / "cache")
    path = f"datasets/{name}/v1/a.bin"
    with fs.connection.open(path) as f:
        assert f.read() == data
    offsets, sizes = [MiB + 4321, 4 * MiB + 99, 3 * MiB], [MiB, 500_000, 10]
    with fs.connection.open(path) as f:
        before = repo_server.stats()["downloads"]
        got = f.get_byte_ranges(offsets, sizes)
        assert repo_server.stats()["downloads"] == before
    assert [bytes(g) for g in got] == [data[o:o + n] for o, n in zip(offsets, sizes)]


def test_a_multi_range_read_meets_a_reset_and_a_silent_server_as_a_single_read_does(repo_server, unique_name,
                                                                                      tmp_path, monkeypatch):
    """The tile rows of a window go out together: a connection reset in one of them is read again (right
    bytes), and a server that stops answering costs one read timeout and EIO, not a timeout per row."""
    monkeypatch.setenv("EOTDLFS_TIMEOUT", "3")
    name = unique_name("faults")
    data = ingest_one_file(repo_server, tmp_path / "src", name, "a.bin", 8 * MiB)
    offsets, sizes = [MiB + 3, 3 * MiB, 6 * MiB + 7], [200_000, 150_000, 90_000]
    with FaultProxy(repo_server.url) as proxy:
        fs = eotdl_fs(repo_server, tmp_path / "cache", url=proxy.url)
        with fs.connection.open(f"datasets/{name}/v1/a.bin") as f:
            proxy.inject("reset", "/download/", at=50_000, count=1)
            assert [bytes(g) for g in f.get_byte_ranges(offsets, sizes)] == \
                [data[o:o + n] for o, n in zip(offsets, sizes)]
            assert proxy.total_injected() == 1
            proxy.inject("silent", "/download/", delay=30)
            started = time.monotonic()
            with pytest.raises(OSError) as failed:
                f.get_byte_ranges([o + MiB for o in offsets], sizes)
            assert failed.value.errno == errno.EIO and time.monotonic() - started < 4.5  # timing out again: 6 s
            proxy.clear()
            assert [bytes(g) for g in f.get_byte_ranges([o + MiB for o in offsets], sizes)] == \
                [data[o + MiB:o + MiB + n] for o, n in zip(offsets, sizes)]


def test_a_scripts_pieces_are_stored_along_the_way_not_all_as_it_exits(repo_server, unique_name, tmp_path,
                                                                       monkeypatch):
    """What waits is stored as the script exits, and its exit waits for the disk: a script's pieces are
    stored once SCRIPT_STORE_AT_BYTES wait (a mount's once 32 MiB wait, or its readers pause)."""
    monkeypatch.setattr(pieces_module, "STORE_QUIET_S", 60)  # no pause counts
    name = unique_name("along")
    data = ingest_one_file(repo_server, tmp_path / "src", name, "a.bin", 16 * MiB)
    fs = eotdl_fs(repo_server, tmp_path / "cache")
    with fs.connection.open(f"datasets/{name}/v1/a.bin") as f:
        offsets = [MiB + 5 + i * (2 * MiB) for i in range(6)]  # 6 ranges of 1 MiB, apart: 6 MiB of pieces
        assert [bytes(g) for g in f.get_byte_ranges(offsets, [MiB] * 6)] == [data[o:o + MiB] for o in offsets]
        cache, checksum = fs.connection.reading().cache, f._handle.content.checksum
        deadline = time.monotonic() + 10
        while not cache.holding(checksum, [piece_key(n) for n in range(256)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cache.holding(checksum, [piece_key(n) for n in range(256)])  # before the connection's end


def test_a_1_mib_read_at_an_offset_of_a_64_mib_file_downloads_at_most_8_mib(repo_server, unique_name, tmp_path):
    name = unique_name("off")
    data = ingest_one_file(repo_server, tmp_path / "src", name, "big.bin", 64 * MiB)
    fs = eotdl_fs(repo_server, tmp_path / "cache")
    fs.info(f"datasets/{name}/v1/big.bin")  # the listing, not counted
    before = repo_server.stats()["bytes_sent"]
    assert fs.cat_file(f"datasets/{name}/v1/big.bin", 40 * MiB + 12345, 41 * MiB + 12345) == \
        data[40 * MiB + 12345:41 * MiB + 12345]
    fetched = repo_server.stats()["bytes_sent"] - before
    assert MiB <= fetched <= 8 * MiB, fetched


def test_one_block_cache_for_eotdl_and_a_mount_both_ways(repo_server, mount_factory, unique_name, tmp_path):
    """What eotdl:// read, a mount on its cache dir reads without the server; and what that mount
    read, eotdl:// reads without the server while the mount holds the cache dir."""
    first, second = unique_name("shared"), unique_name("shared")
    data = ingest_one_file(repo_server, tmp_path / "src1", first, "data.bin", 3 * MiB + 5)
    other = ingest_one_file(repo_server, tmp_path / "src2", second, "other.bin", 2 * MiB + 7)
    cache = tmp_path / "cache"
    fs = eotdl_fs(repo_server, cache)
    assert fs.cat_file(f"datasets/{first}/v1/data.bin") == data
    fs.connection.close()
    mnt = mount_factory(repo_server, cache_dir=cache)
    path = mnt.path / "datasets" / first / "v1" / "data.bin"
    os.stat(path)
    before = repo_server.stats()["bytes_sent"]
    assert path.read_bytes() == data
    assert repo_server.stats()["bytes_sent"] == before  # every block came from the cache eotdl:// filled
    assert (mnt.path / "datasets" / second / "v1" / "other.bin").read_bytes() == other
    fs = eotdl_fs(repo_server, cache)
    fs.info(f"datasets/{second}/v1/other.bin")
    before = repo_server.stats()["bytes_sent"]
    assert fs.cat_file(f"datasets/{second}/v1/other.bin") == other
    assert repo_server.stats()["bytes_sent"] == before


def test_a_corrupted_download_is_an_io_error_and_not_kept(repo_server, unique_name, tmp_path):
    name = unique_name("bad")
    data = ingest_one_file(repo_server, tmp_path / "src", name, "data.bin", 3 * MiB + 3)
    with FaultProxy(repo_server.url) as proxy:
        fs = eotdl_fs(repo_server, tmp_path / "cache", url=proxy.url)
        path = f"datasets/{name}/v1/data.bin"
        fs.info(path)
        proxy.inject("corrupt", r"/download/", count=1, at=1000)
        with pytest.raises(OSError) as info:
            fs.cat_file(path)
        assert info.value.errno == errno.EIO
        assert proxy.total_injected() == 1
        assert fs.cat_file(path) == data  # fetched again: nothing of the bad bytes was kept


def test_put_ingests_a_folder_as_the_next_version(repo_server, two_versions, tmp_path):
    name, _, v2 = two_versions
    fs = eotdl_fs(repo_server, tmp_path / "cache")
    assert fs.ls(f"datasets/{name}", detail=False)[-1] == f"datasets/{name}/latest"  # listed before the put
    (v2 / "new.txt").write_text("new\n")
    result = fs.put(str(v2), f"eotdl://datasets/{name}")
    assert (result.version, result.uploaded) == (3, 1)
    assert fs.cat_file(f"datasets/{name}/v3/new.txt") == b"new\n"
    assert fs.info(f"datasets/{name}/latest")["destination"] == f"datasets/{name}/v3"
    write_metadata(tmp_path / "other", "another-name")
    with pytest.raises(ValueError, match="another-name"):
        fs.put(str(tmp_path / "other"), f"datasets/{name}")


def test_put_ingests_a_stac_folder_named_by_its_catalog(repo_server, unique_name, tmp_path):
    name = unique_name("stac-put")
    folder = write_catalog(tmp_path / "src", items=2, name=name)
    collection = json.loads((folder / "scenes" / "collection.json").read_text())
    collection["providers"] = [{"name": "ESA", "url": "https://esa.int"}]  # authors and source, no metadata.yml
    write_json(folder / "scenes" / "collection.json", collection)
    fs = eotdl_fs(repo_server, tmp_path / "cache")
    with pytest.raises(ValueError, match=name):
        fs.put(str(folder), "datasets/another-name")
    assert fs.put(str(folder), f"datasets/{name}").version == 1
    assert json.loads(fs.cat_file(f"datasets/{name}/v1/catalog.json"))["id"] == name


def test_every_other_write_is_refused_clearly(repo_server, two_versions, tmp_path):
    name, v1, _ = two_versions
    fs = eotdl_fs(repo_server, tmp_path / "cache")
    inside = f"datasets/{name}/v1/labels.csv"
    for call in (lambda: fs.open(inside, "wb"), lambda: fs.pipe_file(inside, b"x"), lambda: fs.rm(inside),
                 lambda: fs.mv(inside, inside + ".old"), lambda: fs.touch(inside), lambda: fs.mkdir(inside + "d"),
                 lambda: fs.put_file(str(v1 / "labels.csv"), inside)):
        with pytest.raises(PermissionError, match="read-only") as info:
            call()
        assert info.value.errno == errno.EROFS
    for call in (lambda: fs.open(f"datasets/{name}", "wb"), lambda: fs.mkdir("datasets/new-one"),
                 lambda: fs.put(str(v1 / "labels.csv"), f"datasets/{name}")):
        with pytest.raises(NotImplementedError, match=r"fs.put\(local_folder"):
            call()
    assert fs.cat_file(inside) == (v1 / "labels.csv").read_bytes()


def _python(code: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_settings_from_the_environment_in_a_fresh_process(repo_server, two_versions, tmp_path):
    """EOTDL_API_URL alone, `import fsspec` alone: the entry point brings eotdlfs in."""
    name, v1, _ = two_versions
    env = cli_env(tmp_path, repo_server.url, None) | {"XDG_CACHE_HOME": str(tmp_path / "xdg-cache")}
    moved = Path(env.pop("EOTDLFS_CACHE_DIR"))
    read = f"import fsspec\nwith fsspec.open('eotdl://datasets/{name}/v1/labels.csv') as f:\n" \
           "    print(f.read().decode(), end='')"
    assert _python(read, env) == (v1 / "labels.csv").read_text()
    assert list((tmp_path / "xdg-cache" / "eotdlfs" / "blocks").iterdir())  # the mount's default cache dir
    assert _python(read, env | {"EOTDLFS_CACHE_DIR": str(moved)}) == (v1 / "labels.csv").read_text()
    assert list((moved / "blocks").iterdir())  # moved, as a mount's and ingest's are


def test_a_script_reading_through_eotdl_with_no_config_file_imports_no_yaml(repo_server, two_versions, tmp_path):
    """PyYAML's import was ~9 ms of every eotdl:// script's start (a COG window is ~5): it comes only
    with a config file or a metadata.yml to read."""
    name, v1, _ = two_versions
    env = cli_env(tmp_path, repo_server.url, None)
    read = f"import fsspec, sys\nwith fsspec.open('eotdl://datasets/{name}/v1/labels.csv') as f:\n" \
           "    print(f.read().decode(), end='')\nprint('yaml' in sys.modules)"
    assert _python(read, env) == (v1 / "labels.csv").read_text() + "False\n"


def test_with_nothing_configured_the_embedded_repository_is_read(tmp_path):
    env = cli_env(tmp_path, None, None) | {"XDG_DATA_HOME": str(tmp_path / "data"),
                                           "XDG_CACHE_HOME": str(tmp_path / "xdg-cache")}
    out = _python("import fsspec\nfs = fsspec.filesystem('eotdl')\nprint(fs.ls('datasets', detail=False))\n"
                  "print(fs.cat_file('datasets/sample-scenes/v1/labels.csv').decode(), end='')", env)
    listing, labels = out.split("\n", 1)
    assert listing == "['datasets/sample-scenes']"
    assert labels == (SAMPLE_DIR / "v1" / "labels.csv").read_text()


@pytest.mark.parametrize("header_first", [True, False])
def test_a_large_read_is_one_range_request_of_about_its_size(repo_server, unique_name, tmp_path, header_first):
    """A COG reader's tile read (640 KiB at an offset) stays one request: a buffered file would send
    its whole-buffer part and then a second request for the tail, reaching into the next tile.
    The first jump into a .tif looks for its tile layout in its header: a reader that read the
    header first (as GDAL does) has it; one that jumped straight in costs one piece more for it,
    never a whole 1 MiB block."""
    name = unique_name("tile")
    data = ingest_one_file(repo_server, tmp_path / "src", name, "scene.tif", 12 * MiB)
    fs = eotdl_fs(repo_server, tmp_path / "cache")
    piece, at = 64 << 10, 9 * MiB + 100_000  # past the request a read at the start is fetched
    with fs.open(f"datasets/{name}/v1/scene.tif") as f:
        if header_first:
            assert f.read(16) == data[:16]  # returns with its bytes; the rest of their request still comes
        before = _settled_stats(repo_server)
        f.seek(at)
        assert f.read(660_000) == data[at:at + 660_000]
        after = repo_server.stats()
    header = 0 if header_first else 1
    assert after["downloads"] - before["downloads"] == 1 + header
    assert after["bytes_sent"] - before["bytes_sent"] <= 660_000 + 2 * piece + header * piece


def _settled_stats(server) -> dict:
    """The server's stats once no bytes went out for 0.3 s (at most 10 s)."""
    stats, deadline = server.stats(), time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = server.stats()
        if now["bytes_sent"] == stats["bytes_sent"]:
            return now
        stats = now
    return stats


def _file_lists(proxy: FaultProxy) -> list[list[str]]:
    """The `path=` of each request for a file list ([] for a whole list), in order."""
    urls = [urlsplit(p) for _, p, _ in proxy.headers_seen if urlsplit(p).path.endswith("/files")]
    return [parse_qs(u.query).get("path", []) for u in urls]


def test_opening_one_file_asks_for_it_alone_not_for_the_versions_whole_list(repo_server, two_versions, tmp_path):
    """A script reading one file of a 10,000-file version must not fetch (and parse, while it reads)
    the whole list, as the mount does in the background after its first lookup; once two paths were
    found alone in the version, the next lookup fetches the whole list, which serves every path after it."""
    name, v1, _ = two_versions
    with FaultProxy(repo_server.url) as proxy:
        fs = eotdl_fs(repo_server, tmp_path / "cache", url=proxy.url)
        with fs.open(f"datasets/{name}/v1/labels.csv") as f:
            assert f.read() == (v1 / "labels.csv").read_bytes()
        time.sleep(3 * LIST_LATER_S)
        assert _file_lists(proxy) == [["labels.csv"]]
        for rel in ("images/tile_0.bin", "images/tile_1.bin", "images/2023/big.bin"):
            assert fs.cat_file(f"datasets/{name}/v1/{rel}") == (v1 / rel).read_bytes()
        assert _file_lists(proxy) == [["labels.csv"], ["images/tile_0.bin"], []]
        with eotdlfs.connect(api_url=proxy.url, cache_dir=tmp_path / "other-cache") as connection:
            with connection.open(f"datasets/{name}/v1/labels.csv") as f:
                assert f.read() == (v1 / "labels.csv").read_bytes()
        assert _file_lists(proxy)[3:] == [["labels.csv"]]  # nor at the end: a script does not remount offline


def test_paths_a_version_lacks_are_looked_up_alone_once_not_through_its_whole_list(repo_server, two_versions,
                                                                                   tmp_path):
    """Opening a TIFF, GDAL asks for 7 sidecar files (.aux.xml, .aux, .xml...) that are seldom there: each
    fetched a 10,000-file version's whole list (rasterio's open 40 -> 130 ms). Each is one small request,
    once; and a path a published version lacks stays absent, so it is not asked again."""
    name, v1, _ = two_versions
    with FaultProxy(repo_server.url) as proxy:
        fs = eotdl_fs(repo_server, tmp_path / "cache", url=proxy.url)
        with fs.open(f"datasets/{name}/v1/labels.csv") as f:
            assert f.read() == (v1 / "labels.csv").read_bytes()
        sidecars = [f"labels.csv{ext}" for ext in (".aux.xml", ".aux", ".AUX", ".xml", ".XML", ".ovr", ".msk")]
        for _ in range(2):
            assert not any(fs.exists(f"datasets/{name}/v1/{rel}") for rel in sidecars)
        assert [p for p in _file_lists(proxy) if p != ["labels.csv"]] == [[rel] for rel in sidecars]


def test_put_get_and_not_found_as_fsspec_users_expect(repo_server, two_versions, tmp_path):
    """put of a missing folder raised NotImplementedError, of an unchanged one NothingToIngest; a recursive
    get of a record made an empty `latest/` folder; a path not found was named '/datasets/...' or 'datasets/...'."""
    name, v1, v2 = two_versions
    fs = eotdl_fs(repo_server, tmp_path / "cache")
    missing = tmp_path / "no-such-folder"
    with pytest.raises(FileNotFoundError) as info:
        fs.put(str(missing), f"datasets/{name}")
    assert info.value.filename == str(missing)
    bare = make_folder(tmp_path / "bare", name, 1)
    (bare / "metadata.yml").unlink()  # files, but neither metadata.yml nor catalog.json
    with pytest.raises(ValueError, match="metadata.yml or catalog.json: neither found in .*STAC"):
        fs.put(str(bare), f"datasets/{name}")
    unchanged = fs.put(str(v2), f"datasets/{name}")  # as putting identical files: nothing to do
    assert (unchanged.version, unchanged.uploaded, unchanged.bytes_sent) == (2, 0, 0)
    assert fs.ls(f"datasets/{name}", detail=False) == [f"datasets/{name}/{v}" for v in ("v1", "v2", "latest")]

    fs.get(f"datasets/{name}", str(tmp_path / "out"), recursive=True)
    assert sorted(os.listdir(tmp_path / "out")) == ["v1", "v2"]  # latest is a link to v2, copied already
    assert tree_digest(tmp_path / "out" / "v2") == tree_digest(v2)
    fs.get(f"datasets/{name}/latest", str(tmp_path / "copy") + "/", recursive=True)  # asked for itself: its files
    assert tree_digest(tmp_path / "copy" / "latest") == tree_digest(v2)

    for path in (f"datasets/{name}/v1/nope.csv", f"datasets/{name}/v9", "datasets/nope-nope",
                 "datasets/nope-nope/latest/a.csv"):
        with pytest.raises(FileNotFoundError) as info:
            fs.info(path)
        assert info.value.filename == path
    with pytest.raises(FileNotFoundError) as info:
        fs.open(f"eotdl://datasets/{name}/latest/nope.csv")
    assert info.value.filename == f"datasets/{name}/latest/nope.csv"


def _read_rest(file) -> bytes:
    """A pickled open file's remaining bytes, read in a worker process (module level: spawn pickles it by name)."""
    with file:
        return file.read()


def test_an_open_file_pickles_and_reads_on_in_a_worker_process(repo_server, two_versions, tmp_path):
    """Dask sends open files to its workers (xarray's `open_dataset(fs.open(url), chunks=...)`): an
    eotdl:// file pickles as its filesystem's file, reopened at its position. It raised
    'cannot pickle _thread.lock'."""
    name, v1, _ = two_versions
    data = (v1 / "images/2023/big.bin").read_bytes()
    fs = eotdl_fs(repo_server, tmp_path / "cache")
    with fs.open(f"datasets/{name}/v1/images/2023/big.bin") as f:
        f.seek(MiB + 3)
        copy = pickle.loads(pickle.dumps(f))
        assert (copy.tell(), copy.read(10)) == (MiB + 3, data[MiB + 3:MiB + 13])
        assert copy.fs.storage_options == fs.storage_options
        copy.close()
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as workers:
            assert workers.submit(_read_rest, f).result(timeout=120) == data[MiB + 3:]
    with pytest.raises(TypeError, match="open it through eotdl://"):
        with fs.connection.open(f"datasets/{name}/v1/labels.csv") as plain:
            pickle.dumps(plain)


@pytest.mark.parametrize("layer", ["simplecache", "filecache", "blockcache"])
def test_fsspecs_caching_layers_chain_in_front_of_eotdl(repo_server, two_versions, tmp_path, layer):
    """`simplecache::eotdl://...` and its kin, as fsspec users chain them; blockcache:: raised
    AttributeError ('RemoteFile' object has no attribute 'blocksize')."""
    name, v1, _ = two_versions
    data = (v1 / "images/2023/big.bin").read_bytes()
    options = {"eotdl": {"api_url": repo_server.url, "cache_dir": str(tmp_path / "cache"), "skip_instance_cache": True},
               layer: {"cache_storage": str(tmp_path / layer)}}
    with fsspec.open(f"{layer}::eotdl://datasets/{name}/v1/images/2023/big.bin", **options) as f:
        f.seek(2 * MiB + 5)
        assert f.read(1000) == data[2 * MiB + 5:2 * MiB + 1005]
        f.seek(0)
        assert f.read() == data
    assert list((tmp_path / layer).iterdir())  # the layer kept its own copy


def _exit_with_read(file, offset: int, expected: bytes) -> None:
    """A forked worker's read of an inherited file: exit 0 when it read EXPECTED at OFFSET, 3
    otherwise, 4 on an OSError naming eotdl://."""
    try:
        file.seek(offset)
        ok = file.read(len(expected)) == expected
        file.close()
    except OSError as exc:
        os._exit(4 if "eotdl://" in str(exc) else 5)
    os._exit(0 if ok else 3)


def _exit_code_of_forked(file, offset: int, expected: bytes) -> int | None:
    worker = multiprocessing.get_context("fork").Process(target=_exit_with_read, args=(file, offset, expected))
    worker.start()
    worker.join(60)
    if worker.is_alive():
        worker.kill()
        worker.join(10)
        return None
    return worker.exitcode


def test_a_file_opened_before_a_fork_reads_in_the_forked_worker(repo_server, two_versions, tmp_path):
    """A map-style dataset that opens its files in __init__, read by forked workers (a DataLoader's,
    multiprocessing's): the child's first read waited for the parent's reader threads for ever."""
    name, v1, _ = two_versions
    data = (v1 / "images/2023/big.bin").read_bytes()
    fs = eotdl_fs(repo_server, tmp_path / "cache")
    with fs.open(f"datasets/{name}/v1/images/2023/big.bin") as f:
        assert f.read(10) == data[:10]
        assert _exit_code_of_forked(f, 2 * MiB, data[2 * MiB:2 * MiB + 5000]) == 0
        assert f.read(10) == data[10:20]  # the parent's file reads on
    with fs.connection.open(f"datasets/{name}/v1/images/2023/big.bin") as plain:  # no filesystem to reopen it
        assert plain.read(10) == data[:10]
        assert _exit_code_of_forked(plain, 2 * MiB, data[2 * MiB:2 * MiB + 5000]) == 4


def test_du_counts_each_file_once_and_an_existing_folder_needs_no_making(repo_server, two_versions, tmp_path):
    """A version's folder had the version's size, so `du` of a record counted every file twice (the
    folder of `latest` and its files) and `du(withdirs=True)` of a version twice too; `makedirs`
    of a folder that exists (exist_ok=True: fsspec's mapper does it before each write) raised
    PermissionError, which hid the write's own refusal."""
    name, v1, v2 = two_versions
    fs = eotdl_fs(repo_server, tmp_path / "cache")
    v1_size, v2_size = (sum(p.stat().st_size for p in v.rglob("*") if p.is_file()) for v in (v1, v2))
    assert fs.du(f"datasets/{name}") == v1_size + v2_size
    assert fs.du(f"datasets/{name}/v1", withdirs=True) == fs.du(f"datasets/{name}/v1") == v1_size
    assert fs.info(f"datasets/{name}/v1")["size"] == 0
    fs.makedirs(f"datasets/{name}/v1/images", exist_ok=True)
    fs.makedirs("datasets", exist_ok=True)
    for call in (lambda: fs.makedirs(f"datasets/{name}/v1"), lambda: fs.mkdir(f"datasets/{name}")):
        with pytest.raises(FileExistsError):
            call()
    with pytest.raises(PermissionError, match="write: versions are read-only"):
        fsspec.get_mapper(f"eotdl://datasets/{name}/v1", api_url=repo_server.url,
                          cache_dir=str(tmp_path / "cache"))["images/new.bin"] = b"x"


def test_a_pickled_or_forked_file_of_latest_reads_the_version_it_was_opened_on(repo_server, two_versions, tmp_path):
    """A copy of a `latest/...` file sent to a worker after a new version was published read the
    new version's bytes, beside the original reading the old ones: it reopened `latest` by name."""
    name, _, v2 = two_versions
    fs = eotdl_fs(repo_server, tmp_path / "cache")
    old = (v2 / "images/2023/big.bin").read_bytes()
    with fs.open(f"datasets/{name}/latest/images/2023/big.bin") as f:
        (v2 / "images/2023/big.bin").write_bytes(os.urandom(len(old)))
        assert fs.put(str(v2), f"datasets/{name}").version == 3
        with pickle.loads(pickle.dumps(f)) as copy:
            assert (copy.path, copy.read()) == (f"datasets/{name}/latest/images/2023/big.bin", old)
        assert _exit_code_of_forked(f, 2 * MiB, old[2 * MiB:2 * MiB + 5000]) == 0


def test_a_walk_of_small_files_through_eotdl_is_served_many_files_per_request(repo_server, unique_name, tmp_path):
    """`fs.get(..., recursive=True)` opens file after file, as `cp -r` does on the mount."""
    name = unique_name("fss-chips")
    source = tmp_path / "src"
    write_metadata(source, name)
    (source / "chips").mkdir()
    for i in range(120):
        (source / "chips" / f"{i:03d}.bin").write_bytes(os.urandom(100 + i))
    ingest(repo_server, source)
    before = repo_server.stats()
    eotdl_fs(repo_server, tmp_path / "cache").get(f"datasets/{name}/v1/chips", str(tmp_path / "out"), recursive=True)
    assert tree_digest(tmp_path / "out") == tree_digest(source / "chips")
    after = repo_server.stats()
    assert after["downloads"] - before["downloads"] < 20  # of 120 files
    assert after["contents"]["requests"] > before["contents"]["requests"]
