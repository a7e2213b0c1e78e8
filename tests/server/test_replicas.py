"""Two replicas on one PostgreSQL and one bucket behind nginx: any request may go to either; a replica
killed with -9 mid-read or mid-ingest loses nothing, and the client carries on through the other."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from engines import Balancer
from tests.conftest import FULL_MATRIX

from eotdlfs.client.api import ApiClient
from eotdlfs.client.errors import RepositoryError
from eotdlfs.client.ingest.engine import ingest_folder
from eotdlfs.client.settings import Settings
from tests.client.helpers import write_metadata
from tests.conftest import RepoServer

pytestmark = pytest.mark.skipif(not FULL_MATRIX, reason="PostgreSQL + S3: set EOTDLFS_FULL_MATRIX=1 (CI does)")
MiB = 1024 * 1024
KILL_WAIT_S = 60.0


class Front:
    """The balancer as the tests' server fixtures look: a URL, and tokens from the shared database."""

    def __init__(self, balancer: Balancer, replica: RepoServer):
        self.url, self._replica = balancer.url, replica

    def token(self, user: str) -> str:
        return self._replica.token(user)


@pytest.fixture
def balanced(shared) -> Iterator[tuple[list[RepoServer], Front]]:
    replicas = shared(2)
    balancer = Balancer([r.port for r in replicas])
    try:
        yield replicas, Front(balancer, replicas[0])
    finally:
        balancer.stop()


def _folder(folder: Path, name: str, files: dict[str, bytes]) -> Path:
    write_metadata(folder, name)
    for path, data in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)
    return folder


def _sha1s(files: dict[str, bytes]) -> dict[str, str]:
    return {path: hashlib.sha1(data).hexdigest() for path, data in files.items()}


def _listed(client: ApiClient, name: str) -> dict[str, str]:
    record = client.record_by_name("datasets", name)
    listed = client.files("datasets", record["id"], record["versions"][-1]["version_id"])
    return {f["filename"]: f["checksum"] for f in listed if f["filename"] != "metadata.yml"}


def test_ingest_and_mount_through_the_balancer(balanced, tmp_path, mount_factory, unique_name):
    replicas, front = balanced
    name = unique_name("lb")
    files = {f"part{i % 3}/f{i}.bin": os.urandom(200_000 + i) for i in range(12)}
    files["big.bin"] = os.urandom(20 * MiB)  # over the client's multipart threshold: parts spread over replicas
    client = ApiClient(Settings(front.url, front.token("alice"), None))
    try:
        ingest_folder(client, "datasets", _folder(tmp_path / "src", name, files))
        assert _listed(client, name) == _sha1s(files)
    finally:
        client.close()
    assert all(sum(r.stats()["uploads"].values()) > 0 for r in replicas)  # both took writes
    mount = mount_factory(front)
    for path, data in files.items():
        assert (mount.path / "datasets" / name / "v1" / path).read_bytes() == data
    assert replicas[0].fsck().ok


def test_a_replica_killed_mid_read_loses_nothing(balanced, tmp_path, unique_name):
    replicas, front = balanced
    name = unique_name("killread")
    data = os.urandom(24 * MiB)
    client = ApiClient(Settings(front.url, front.token("alice"), None))
    try:
        ingest_folder(client, "datasets", _folder(tmp_path / "src", name, {"data.bin": data}))
        rid = client.record_by_name("datasets", name)["id"]
        got, started = [], threading.Event()

        def kill_when_reading() -> None:
            started.wait(KILL_WAIT_S)
            replicas[1].kill()

        killer = threading.Thread(target=kill_when_reading)
        killer.start()
        for start in range(0, len(data), MiB // 2):
            got.append(bytes(client.read_range("datasets", rid, "data.bin", None, start, MiB // 2)))
            if len(got) == 8:
                started.set()
                killer.join(KILL_WAIT_S)
        assert b"".join(got) == data
    finally:
        client.close()


def test_a_replica_killed_mid_ingest_loses_nothing(balanced, tmp_path, unique_name):
    replicas, front = balanced
    name = unique_name("killingest")
    files = {f"f{i}.bin": os.urandom(MiB) for i in range(24)}
    files["big.bin"] = os.urandom(40 * MiB)
    folder = _folder(tmp_path / "src", name, files)
    client = ApiClient(Settings(front.url, front.token("alice"), None))
    outcome: list[BaseException | None] = []

    def ingest() -> None:
        try:
            ingest_folder(client, "datasets", folder)
            outcome.append(None)
        except RepositoryError as exc:  # a request the dead replica had taken: the client may give up
            outcome.append(exc)

    try:
        worker = threading.Thread(target=ingest)
        worker.start()
        deadline = time.monotonic() + KILL_WAIT_S
        while sum(replicas[1].stats()["uploads"].values()) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        replicas[1].kill()  # it has taken uploads, and more are on their way to it
        worker.join(KILL_WAIT_S * 5)
        assert outcome, "the ingest hung"
        if outcome[0] is not None:  # then running it again finishes the job
            ingest_folder(client, "datasets", folder)
        assert _listed(client, name) == _sha1s(files)
        record = client.record_by_name("datasets", name)
        assert [v["version_id"] for v in record["versions"]] == [record["versions"][0]["version_id"]]
        with client.download("datasets", record["id"], "big.bin", None) as blocks:
            assert b"".join(blocks) == files["big.bin"]
    finally:
        client.close()
    report = replicas[0].fsck()
    assert report.ok, report.problems
