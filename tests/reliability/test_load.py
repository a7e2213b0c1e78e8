"""Load: 200 concurrent downloaders and 20 concurrent ingests against one server for a bounded time.

Properties: no request fails, every downloaded byte matches its SHA-1 (whole files and
ranges), every ingested version downloads back byte-identical, and the server's resident
memory stays flat (no growth after warm-up beyond a small margin).
Bounded: EOTDLFS_LOAD_SECONDS (default 15) of load, then the checks.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from pathlib import Path

import pytest
import requests
from requests.adapters import HTTPAdapter

from eotdlfs.client.api import ApiClient
from eotdlfs.client.hashcache import HashCache
from eotdlfs.client.ingest import ingest_folder
from eotdlfs.client.settings import Settings
from reliability.conftest import assert_fsck_ok, server_pid
from reliability.ingestkit import MiB, bytes_lost, make_folder, record

LOAD_SECONDS = float(os.environ.get("EOTDLFS_LOAD_SECONDS", "15"))
DOWNLOADERS = 200
INGESTERS = 20
RSS_GROWTH_LIMIT = 64 * MiB  # after warm-up; a leak of a buffer per request would blow far past it


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class Errors:
    def __init__(self) -> None:
        self.lock, self.items = threading.Lock(), []

    def add(self, what: str) -> None:
        with self.lock:
            if len(self.items) < 50:
                self.items.append(what)


def downloader(url: str, rid: str, files: dict[str, bytes], stop: threading.Event, errors: Errors,
               counts: list[int], seed: int) -> None:
    rng = random.Random(seed)
    names = sorted(files)
    with requests.Session() as session:
        session.mount("http://", HTTPAdapter(pool_maxsize=1, max_retries=0))
        while not stop.is_set():
            path = rng.choice(names)
            data = files[path]
            headers, want = {}, data
            if rng.random() < 0.5:
                first = rng.randrange(len(data))
                last = min(len(data) - 1, first + rng.randrange(256 * 1024))
                headers["Range"] = f"bytes={first}-{last}"
                want = data[first:last + 1]
            try:
                r = session.get(f"{url}datasets/{rid}/download/{path}", headers=headers, timeout=60)
                if r.status_code not in (200, 206) or hashlib.sha1(r.content).digest() != hashlib.sha1(want).digest():
                    errors.add(f"download {path} {headers}: {r.status_code}, {len(r.content)} bytes")
            except requests.RequestException as exc:
                errors.add(f"download {path}: {exc!r}")
            counts[0] += 1


def ingester(url: str, token: str, folder: Path, stop: threading.Event, errors: Errors,
             versions: dict[str, tuple[int, dict[str, bytes]]], seed: int) -> None:
    """Ingest FOLDER, then keep changing one file and re-ingesting until STOP; remember the last version."""
    rng = random.Random(seed)
    name = folder.name
    files = make_folder(folder, name, small=8, seed=seed)
    api = ApiClient(Settings(url, token, None, timeout=60))
    try:
        while True:
            result = ingest_folder(api, "datasets", folder, cache=HashCache(folder.parent / f"{name}.hashes"))
            versions[name] = (result.version, dict(files))
            if stop.is_set():
                return
            path = f"tiles/t{rng.randrange(8):03d}.bin"
            files[path] = rng.randbytes(rng.randint(1, 64 * 1024))
            (folder / path).write_bytes(files[path])
    except Exception as exc:  # noqa: BLE001 - any failure is the finding
        errors.add(f"ingest {name}: {exc!r}")
    finally:
        api.close()


@pytest.mark.slow  # about 40 s
@pytest.mark.timeout(LOAD_SECONDS * 6 + 120)
def test_200_downloads_and_20_ingests_at_once(server_class: type, tmp_path: Path, tally) -> None:
    server = server_class(tmp_path / "root")
    server.start()
    try:
        token = server.token("alice")
        seed_folder = tmp_path / "seed" / "load-seed"
        files = make_folder(seed_folder, "load-seed", small=30, large_bytes=4 * MiB, seed=1)
        api = ApiClient(Settings(server.url, token, None))
        ingest_folder(api, "datasets", seed_folder, cache=HashCache(tmp_path / "seed.hashes"))
        api.close()
        rid = record(server.url, "datasets", "load-seed")["id"]

        stop, errors, counts, versions = threading.Event(), Errors(), [0], {}
        threads = [threading.Thread(target=downloader, args=(server.url, rid, files, stop, errors, counts, i), daemon=True)
                   for i in range(DOWNLOADERS)]
        threads += [threading.Thread(target=ingester, args=(server.url, token, tmp_path / "ingest" / f"load-{i:02d}",
                                                            stop, errors, versions, i), daemon=True)
                    for i in range(INGESTERS)]
        pid, samples = server_pid(server), []
        for t in threads:
            t.start()
        deadline = time.monotonic() + LOAD_SECONDS
        while time.monotonic() < deadline:
            samples.append(rss_bytes(pid))
            time.sleep(0.25)
        stop.set()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads), "a load thread did not stop"

        warm = max(samples[: max(1, len(samples) // 4)])
        print(f"load: {counts[0]} downloads, {sum(v for v, _ in versions.values())} versions made by the ingests, "
              f"RSS warm {warm / MiB:.0f} MiB, peak {max(samples) / MiB:.0f} MiB, last {samples[-1] / MiB:.0f} MiB")
        assert errors.items == []
        assert max(samples[len(samples) // 4:]) <= warm + RSS_GROWTH_LIMIT
        assert len(versions) == INGESTERS
        lost = 0
        for name, (version, expected) in versions.items():
            lost += bytes_lost(server.url, "datasets", record(server.url, "datasets", name)["id"], version, expected)
        tally.bytes_lost += lost
        assert lost == 0
        assert_fsck_ok(server.root)
    finally:
        server.stop()
