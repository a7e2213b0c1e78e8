"""Faults on the wire between the mount and the server: readers get EIO or the right bytes, never wrong ones.

The fault proxy sits between `eotdlfs mount` and the server. For each fault a file is read
end to end while the fault is on; the read must fail with EIO or return exactly the
ingested bytes. Then the fault is cleared and the same file, through the same mount (no
remount), must read back exactly: the block cache kept nothing corrupt, and the mount
recovered on its own.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from eotdlfs.client.api import ApiClient
from eotdlfs.client.hashcache import HashCache
from eotdlfs.client.ingest import ingest_folder
from eotdlfs.client.settings import Settings
from reliability.conftest import Proxied
from reliability.faultproxy import FaultProxy

MiB = 1024 * 1024
FILE_SIZE = 3 * MiB + 4321  # four 1 MiB blocks, the last one short
# fault -> keyword arguments of FaultProxy.inject (every request for the file while it is on)
FAULTS = {
    "reset": {"at": 300_000},
    "truncate": {"at": 500_000},
    "corrupt": {"at": 123_456},
    "error500": {},
    "drop": {},
    "slow": {"delay": 7.0, "count": 1},  # past the mount's 5 s client timeout, once: the retry succeeds
}
READ_WITHIN_S = 40.0
LONE_BLOCK_UNCHECKABLE = (
    "known limit: the API gives whole-file SHA-1s only, so a corrupted block read on its own is cached "
    "unverified; the next whole-file read then fails its checksum once (EIO, never wrong bytes) before it is exact")


@pytest.fixture(scope="module")
def seeded(module_server: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Dataset 'mount-faults' v1: one 4-block file per fault, random bytes."""
    folder = tmp_path_factory.mktemp("mount-faults") / "mount-faults"
    folder.mkdir()
    (folder / "metadata.yml").write_text("name: mount-faults\nauthors: [r]\nlicense: MIT\nsource: http://example.com\n")
    rng, files = random.Random(5), {}
    for fault in [*FAULTS, "readers"]:
        files[f"{fault}.bin"] = rng.randbytes(FILE_SIZE)
        (folder / f"{fault}.bin").write_bytes(files[f"{fault}.bin"])
    api = ApiClient(Settings(module_server.url, module_server.token("alice"), None))
    try:
        ingest_folder(api, "datasets", folder, cache=HashCache(folder.parent / "hashes.sqlite"))
    finally:
        api.close()
    return files


@pytest.fixture()
def proxied_mount(module_server: Any, seeded: dict, mount_factory: Any) -> Iterator[tuple[FaultProxy, Path]]:
    with FaultProxy(module_server.url) as proxy:
        mount = mount_factory(Proxied(proxy.url, module_server.token))
        yield proxy, mount.path / "datasets" / "mount-faults" / "v1"


def read_all(path: Path) -> tuple[bytes | None, OSError | None]:
    try:
        with open(path, "rb") as f:
            return f.read(), None
    except OSError as exc:
        return None, exc


# The default run leaves out two faults that reach the mount as a reset does, and the 7 s stall; CI
# injects all of them.
IN_CI_ONLY = {"truncate", "drop", "slow"}


@pytest.mark.parametrize("fault", [pytest.param(fault, marks=pytest.mark.slow) if fault in IN_CI_ONLY else fault
                                   for fault in sorted(FAULTS)])
def test_fault_gives_eio_or_right_bytes_then_recovers(proxied_mount, seeded, tally, fault: str) -> None:
    proxy, version = proxied_mount
    name = f"{fault}.bin"
    want = seeded[name]
    kw = dict(FAULTS[fault])
    rule = proxy.inject(fault, f"/download/{name}", **kw)
    started = time.monotonic()
    got, error = read_all(version / name)
    took = time.monotonic() - started
    tally.faults_injected += rule.hits
    assert rule.hits >= 1
    if got is not None and got != want:
        tally.bytes_lost += sum(a != b for a, b in zip(got, want)) + abs(len(got) - len(want))
    assert (error is not None and error.errno == errno.EIO) or got == want, (error, None if got is None else len(got))
    assert took < READ_WITHIN_S

    proxy.clear()
    again, error = read_all(version / name)  # same mount: no remount
    if again is not None and again != want:
        tally.bytes_lost += 1
    assert error is None and again == want, error


@pytest.mark.xfail(strict=True, reason=LONE_BLOCK_UNCHECKABLE)
def test_corrupt_block_read_alone_is_never_cached(proxied_mount, seeded, tally) -> None:
    """A random read of one corrupted block cannot be checked (the API gives whole-file SHA-1s only), but a
    corrupt block must not outlive the fault: a whole-file read afterwards is exact."""
    proxy, version = proxied_mount
    name, want = "readers.bin", seeded["readers.bin"]
    rule = proxy.inject("corrupt", f"/download/{name}", at=10)
    fd = os.open(version / name, os.O_RDONLY)
    try:
        os.pread(fd, 4096, 2 * MiB)  # a block in the middle, alone
    except OSError as exc:
        assert exc.errno == errno.EIO
    finally:
        os.close(fd)
    tally.faults_injected += rule.hits
    proxy.clear()
    again, error = read_all(version / name)
    assert error is None and hashlib.sha1(again).digest() == hashlib.sha1(want).digest()


def test_eight_cold_readers_share_one_fetch_per_block(module_server, seeded, mount_factory, tally) -> None:
    """8 threads read the same never-read file at once: identical, exact bytes; the server sends each byte once."""
    import threading

    mount = mount_factory(module_server)
    path = mount.path / "datasets" / "mount-faults" / "v1" / "readers.bin"
    want = seeded["readers.bin"]
    before = module_server.stats()["bytes_sent"]
    results: list[bytes | None] = [None] * 8
    barrier = threading.Barrier(8)

    def reader(i: int) -> None:
        barrier.wait(10)
        results[i] = path.read_bytes()

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r == want for r in results)
    assert module_server.stats()["bytes_sent"] - before == len(want)


def test_first_open_answers_before_the_whole_file_list(proxied_mount, seeded) -> None:
    """A fresh mount's first open resolves its path with one small request: the version's whole
    file list (10,000 entries in a big version) may hang without holding up the first bytes."""
    import threading

    proxy, version = proxied_mount
    whole_list = proxy.inject("silent", r"/files\?version=1$", delay=30.0)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(open(version / "readers.bin", "rb").read(65536)), daemon=True)
    reader.start()
    reader.join(10.0)
    answered_while_the_list_hung = bool(got)
    whole_list.struck.wait(10.0)  # the whole list follows in the background
    proxy.clear()  # the hung listing ends: the mount can be unmounted
    reader.join(READ_WITHIN_S)
    assert answered_while_the_list_hung, "the first open waited for the whole file list"
    assert got == [seeded["readers.bin"][:65536]]
    assert whole_list.hits == 1  # asked for, in the background
