"""A broken or hostile server, seen through a real mount: bad names in its listings, and silence.

The fault proxy sits between `eotdlfs mount` and a real server. `rewrite` adds records,
versions and file paths that break the rules next to the good ones; `silent` accepts every
connection and never answers. The mount must list what is sound, read it, and never hang a
caller longer than its bound.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from reliability.conftest import Proxied
from reliability.faultproxy import FaultProxy
from tests.fs.datasets import ingest, write_metadata

KIND = "datasets"
RECORDS_ROUTE = rf"^/{KIND}(\?|$)"
FILES_ROUTE = rf"^/{KIND}/[^/?]+/files\?"
BAD_NAMES = ["evil/name", "..", ".", "", "nul\x00name", "tab\tname", "x" * 300, "a"]
BAD_VERSIONS = [0, -2, "x", None]
BAD_PATHS = ["../escape.txt", "sub/../../up.txt", "a//b.txt", "/abs.txt", ".", "..", "", "ctl\x01.txt",
             "back\\slash.txt", "y" * 256, "trailing/"]
TIMEOUT_S = 5  # EOTDLFS_TIMEOUT of the mount fixture
BOUND_S = TIMEOUT_S + 5  # the mount's one bound on a callback's wait for the server
PROBE_EVERY_S = 5  # how often reads ask a silent server again (eotdlfs.fs.reader.SILENT_PROBE_EVERY_S)
ANSWER_AT_ONCE_S = 2.0
NEW_VERSION_WITHIN_S = 40.0


def edit_json(change: Callable[[Any], Any]) -> Callable[[bytes], bytes]:
    return lambda body: json.dumps(change(json.loads(body))).encode()


def with_bad_records(listed: Any) -> Any:
    """Every record listed, plus a copy of the first under each bad name; bad versions added to all."""
    if not isinstance(listed, list) or not listed:
        return listed  # ?name= answers one record
    bad = [{**listed[0], "id": f"bad-{i}", "name": name} for i, name in enumerate(BAD_NAMES)]
    for record in listed:
        template = record["versions"][0]
        record["versions"] += [{**template, "version_id": number} for number in BAD_VERSIONS]
    return listed + bad


def with_bad_paths(files: Any) -> Any:
    return files + [{**files[0], "filename": path} for path in BAD_PATHS]


def took(call: Callable[[], Any]) -> tuple[Any, OSError | None, float]:
    started = time.monotonic()
    try:
        return call(), None, time.monotonic() - started
    except OSError as exc:
        return None, exc, time.monotonic() - started


def make_record(server: Any, folder: Path, name: str, files: dict[str, bytes]) -> None:
    write_metadata(folder, name)
    for path, data in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)
    ingest(server, folder)


def test_bad_names_from_the_server_are_left_out_and_logged_once(module_server, mount_factory, unique_name,
                                                                  tmp_path, tally) -> None:
    name = unique_name("hostile")
    files = {"good.txt": b"good bytes\n", "sub/deep.bin": os.urandom(50_000)}
    make_record(module_server, tmp_path / name, name, files)
    with FaultProxy(module_server.url) as proxy:
        proxy.inject("rewrite", RECORDS_ROUTE, method="GET", edit=edit_json(with_bad_records))
        proxy.inject("rewrite", FILES_ROUTE, method="GET", edit=edit_json(with_bad_paths))
        mount = mount_factory(Proxied(proxy.url, module_server.token), ttl=1)
        published, staging = mount.path / KIND, mount.path / "staging" / KIND
        for _ in range(2):  # and again after a refresh past the TTL
            listed = os.listdir(published)
            assert name in listed and not set(BAD_NAMES) & set(listed)
            assert name in os.listdir(staging) and not set(BAD_NAMES) & set(os.listdir(staging))
            assert os.listdir(published / name) == ["v1", "latest"]
            assert sorted(os.listdir(published / name / "v1")) == ["good.txt", "metadata.yml", "sub"]
            assert (published / name / "v1" / "sub" / "deep.bin").read_bytes() == files["sub/deep.bin"]
            assert sorted(os.listdir(staging / name)) == ["good.txt", "metadata.yml", "sub"]
            assert (staging / name / "good.txt").read_bytes() == files["good.txt"]
            time.sleep(1.5)
        assert proxy.injected["rewrite"] >= 3
        tally.faults_injected += proxy.total_injected()
    log = mount.log.read_text()
    for bad in BAD_NAMES:
        assert log.count(f"left out the {KIND} record {bad!r:.300}") == 1, bad
    for bad in (0, -2):
        assert log.count(f"left out version {bad!r} of {KIND}/{name}") == 1, bad
    malformed = [line for line in log.splitlines() if "left out a malformed version" in line]
    assert len(malformed) >= 2 and len({line.split(" WARNING ")[1] for line in malformed}) == len(malformed)
    for bad in BAD_PATHS:
        assert log.count(f"left out the file {bad!r:.300} of {KIND}/{name} v1") == 1, bad


def test_a_silent_server_never_stalls_the_mount(module_server, mount_factory, unique_name, tmp_path, tally) -> None:
    name = unique_name("silent")
    files = {"cached.bin": os.urandom(100_000), "uncached.bin": os.urandom(3 * 1024 * 1024)}
    make_record(module_server, tmp_path / name, name, files)
    with FaultProxy(module_server.url) as proxy:
        mount = mount_factory(Proxied(proxy.url, module_server.token), ttl=1)
        published, staging = mount.path / KIND, mount.path / "staging" / KIND
        version = published / name / "v1"
        assert (version / "cached.bin").read_bytes() == files["cached.bin"]
        assert (version / "uncached.bin").stat().st_size == len(files["uncached.bin"])
        assert name in os.listdir(staging)

        silence = proxy.inject("silent")
        time.sleep(1.5)  # past the TTL: the next look wants a fresh list
        listed, error, seconds = took(lambda: os.listdir(published))
        assert error is None and name in listed and seconds < ANSWER_AT_ONCE_S, (error, seconds)
        assert silence.struck.wait(10)  # the refresh went out, and hangs in the background
        data, error, seconds = took(lambda: (version / "uncached.bin").read_bytes())
        assert data is None and error.errno == errno.EIO and seconds < BOUND_S + 3, (error, seconds)
        listed, error, seconds = took(lambda: os.listdir(staging))
        assert error is None and name in listed and seconds < ANSWER_AT_ONCE_S, (error, seconds)
        assert (version / "cached.bin").read_bytes() == files["cached.bin"]

        unlisted = mount_factory(Proxied(proxy.url, module_server.token), ttl=1)  # nothing listed, ever
        listed, error, seconds = took(lambda: os.listdir(unlisted.path / KIND))
        assert error is not None and error.errno == errno.EIO and seconds < BOUND_S + 3, (error, seconds)

        files["more.txt"] = b"v2\n"
        make_record(module_server, tmp_path / name, name, files)  # straight to the server: v2
        tally.faults_injected += proxy.total_injected()
        proxy.clear()
        deadline = time.monotonic() + NEW_VERSION_WITHIN_S
        while "v2" not in os.listdir(published / name) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "v2" in os.listdir(published / name)
        assert (published / name / "v2" / "more.txt").read_bytes() == b"v2\n"
        assert (version / "uncached.bin").read_bytes() == files["uncached.bin"]


def test_cp_r_behind_a_silent_server_fails_in_about_one_bound_not_one_per_file(module_server, mount_factory,
                                                                               unique_name, tmp_path, tally) -> None:
    """A walker behind a silent server waited a whole bound per file (20 files: 200 s here, 10,000
    files at the default bound: a week); once the server answers again the copy is whole."""
    name = unique_name("silent-walk")
    files = {f"chips/{i:02d}.bin": os.urandom(1000 + i) for i in range(20)}
    make_record(module_server, tmp_path / name, name, files)
    with FaultProxy(module_server.url) as proxy:
        mount = mount_factory(Proxied(proxy.url, module_server.token))
        chips = mount.path / KIND / name / "v1" / "chips"
        assert len(os.listdir(chips)) == 20  # listed before the silence: only the bytes are missing
        proxy.inject("silent")
        started = time.monotonic()
        copy = subprocess.run(["cp", "-r", str(chips), str(tmp_path / "out")], capture_output=True, text=True,
                              timeout=20 * BOUND_S)
        seconds = time.monotonic() - started
        assert copy.returncode != 0 and "Input/output error" in copy.stderr
        # a read timeout and a probe (5.5 s); the walk's opens wait for no plan (11 s when they waited for it)
        assert seconds < TIMEOUT_S + 4, seconds
        tally.faults_injected += proxy.total_injected()
        proxy.clear()
        deadline = time.monotonic() + 3 * PROBE_EVERY_S
        for attempt in range(100):  # until the next probe finds the server back (EIO at once till then)
            again = tmp_path / f"again{attempt}"
            copy = subprocess.run(["cp", "-r", str(chips), str(again)], capture_output=True, text=True, timeout=60)
            if copy.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert copy.returncode == 0, copy.stderr
        assert {f"chips/{p.name}": p.read_bytes() for p in again.iterdir()} == files
