"""The two layouts of `eotdlfs serve`: a repository of the SQLite layout upgrades; on PostgreSQL + S3,
replicas share tokens, publish stays a compare-and-swap, large files go up in parts, fsck checks it."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from tests.conftest import FULL_MATRIX
from serverapi import Api, sha1

from eotdlfs.server.fsck import check
from tests.conftest import RepoServer, _serve

DATA = Path(__file__).parent / "data"
OLD_KEY = "eotdlfs_HESRfyUwLoCyArN7tj9Erq_F9L35ieEAJuwIOfNIzxk"  # in layout-8cf53ee.sql
OLD_BLOBS = [b"alpha\n", b"bravo" * 100, b"charlie", b"delta"]
MiB = 1024 * 1024

full_matrix = pytest.mark.skipif(not FULL_MATRIX, reason="PostgreSQL + S3: set EOTDLFS_FULL_MATRIX=1 (CI does)")


def _old_layout_root(root: Path) -> Path:
    """A root as the code of 8cf53ee left it: its SQLite database and its blob folder."""
    root.mkdir(parents=True)
    with sqlite3.connect(root / "repository.db") as db:
        db.executescript((DATA / "layout-8cf53ee.sql").read_text())
        db.execute("PRAGMA journal_mode=WAL")
    for data in OLD_BLOBS:
        digest = sha1(data)
        (root / "blobs" / digest[:2]).mkdir(parents=True, exist_ok=True)
        (root / "blobs" / digest[:2] / digest[2:]).write_bytes(data)
    return root


def test_repository_of_the_sqlite_layout_opens_and_upgrades(tmp_path):
    root = _old_layout_root(tmp_path / "root")
    for server in _serve(RepoServer(root)):
        api = Api(server, "datasets")
        api.headers = {"X-API-Key": OLD_KEY}  # the key made by the old code still works
        record = api.record("old-layout")
        assert [(v["version_id"], v["size"]) for v in record["versions"]] == [(1, 506), (2, 13)]
        assert [d["version_id"] for d in record["drafts"]] == [3]
        assert api.download(record["id"], "d/b.bin", 1).content == b"bravo" * 100
        assert api.download(record["id"], "d/b.bin").content == b"charlie"
        # and takes new writes: the draft is published on top of version 2, a new file version added
        assert api.post(f"datasets/{record['id']}/publish?version=3&base=2").status_code == 200
        v = api.new_version(record["id"])
        assert api.batch(record["id"], v, {"d/b.bin": b"echo"}).status_code == 200
        assert {f["filename"]: f["version"] for f in api.files(record["id"], v)} == {"d/b.bin": 3}
    with sqlite3.connect(root / "repository.db") as db:
        assert db.execute("SELECT value FROM settings WHERE name = 'schema_version'").fetchone() == ("1",)
    assert check(root).ok


@pytest.mark.parametrize("command, flags", [("serve", ["--db", "--blobs", "--redirect-downloads"]),
                                            ("token", ["--root", "--db", "--user"]),
                                            ("fsck", ["--root", "--db", "--blobs", "--quick"])])
def test_the_commands_show_their_storage_flags(command, flags):
    done = subprocess.run([sys.executable, "-m", "eotdlfs", command, "--help"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert all(flag in done.stdout for flag in flags)


@full_matrix
def test_replicas_share_tokens_keys_and_data(shared, unique_name):
    a, b = shared(2)
    api_a = Api(a, "datasets", a.token("alice"))
    rid = api_a.create(unique_name("shared"))
    api_a.new_version(rid)
    assert api_a.batch(rid, 1, {"x": b"written through a"}).status_code == 200
    api_b = Api(b, "datasets")
    api_b.headers = {"X-API-Key": a.api_key("alice")}  # a key made for a's database works on b
    assert api_b.download(rid, "x").content == b"written through a"
    assert api_b.new_version(rid) == 2
    done = subprocess.run([sys.executable, "-m", "eotdlfs", "token", "--db", b.db, "--user", "bob"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    key = done.stderr.strip().removeprefix("api key: ")
    for i, headers in enumerate(({"Authorization": f"Bearer {done.stdout.strip()}"}, {"X-API-Key": key})):
        api_a.headers = headers  # what `eotdlfs token --db` made works on every replica (create asserts a 200)
        api_a.create(unique_name(f"bob{i}"))


@full_matrix
def test_concurrent_publish_through_two_replicas_has_one_winner(shared, unique_name):
    replicas = shared(2)
    apis = [Api(r, "datasets", r.token("alice")) for r in replicas]
    name = unique_name("race")
    rid = apis[0].create(name)
    base = 0  # the latest published version
    for round_ in range(8):  # each round: two drafts based on the same version, published at once
        drafts = [apis[0].new_version(rid, draft=True), apis[1].new_version(rid, draft=True)]
        for api, v in zip(apis, drafts):
            assert api.batch(rid, v, {"who": f"draft {v}".encode()}).status_code == 200
        barrier, answers = threading.Barrier(2), [0, 0]

        def publish(i: int) -> None:
            barrier.wait(10)
            answers[i] = apis[i].post(f"datasets/{rid}/publish?version={drafts[i]}&base={base}").status_code

        threads = [threading.Thread(target=publish, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(answers) == [200, 409], answers
        winner = drafts[answers.index(200)]
        loser = drafts[answers.index(409)]
        assert apis[0].post(f"datasets/{rid}/publish?version={loser}&base={base}").status_code == 409
        assert apis[1].req("DELETE", f"datasets/{rid}/version/{loser}").status_code == 200
        published = [v["version_id"] for v in apis[1].record(name)["versions"]]
        assert published[-1] == winner and len(published) == round_ + 1
        assert apis[1].download(rid, "who", None).content == f"draft {winner}".encode()
        base = winner


@full_matrix
def test_large_files_go_to_s3_in_parts_and_verified(shared, unique_name):
    """Over 8 MiB a file is sent to the store in parts; parts of the API's uploads are joined
    while hashed, whatever their sizes; nothing staged is left."""
    (server,) = shared(1)
    api = Api(server, "datasets", server.token("alice"))
    rid = api.create(unique_name("big"))
    api.new_version(rid)
    big = os.urandom(3 * MiB) * 7  # 21 MiB: three parts of the store
    r = api.post(f"datasets/{rid}?version=1", files={"file": ("one", big)}, data={"checksum": sha1(big)})
    assert r.status_code == 200, r.text
    upload_id = api.post(f"datasets/{rid}/uploadId", json={"filname": "joined", "checksum": sha1(big[::-1])}
                         ).json()["upload_id"]
    parts = [big[::-1][i:i + 3 * MiB] for i in range(0, len(big), 3 * MiB)]  # API parts smaller than S3's
    for n, part in enumerate(parts, 1):
        assert api.post(f"datasets/chunk/{upload_id}", files={"file": ("p", part)},
                        data={"part_number": n, "checksum": hashlib.md5(part).hexdigest()}).status_code == 200
    assert api.post(f"datasets/complete/{upload_id}?version=1").status_code == 200
    assert api.download(rid, "one").content == big
    assert api.download(rid, "joined").content == big[::-1]
    r = api.download(rid, "joined", headers={"Range": f"bytes={9 * MiB - 5}-{9 * MiB + 4}"})
    assert r.status_code == 206 and r.content == big[::-1][9 * MiB - 5:9 * MiB + 5]
    store = server.blob_store()
    assert store.leftovers(set()) == [] and store.blob_size(sha1(big)) == len(big)


@full_matrix
def test_fsck_on_postgres_and_s3(shared, unique_name):
    (server,) = shared(1)
    api = Api(server, "datasets", server.token("alice"))
    rid = api.create(unique_name("fsck"))
    api.new_version(rid)
    assert api.batch(rid, 1, {"a": b"aaa", "b": b"bbbb"}).status_code == 200
    os.environ.update(server.env)
    fsck = [sys.executable, "-m", "eotdlfs", "fsck", "--db", server.db, "--blobs", server.blobs]
    done = subprocess.run(fsck, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("2 blobs checked (7 bytes hashed), 0 orphan(s)")
    store = server.blob_store()
    store.client.delete_object(Bucket=store.bucket, Key=store._blob_key(sha1(b"aaa")))
    report = server.fsck()
    assert [p.split(": ", 1)[1] for p in report.problems] == [f"blob {sha1(b'aaa')} is missing"]
    assert subprocess.run(fsck, capture_output=True, timeout=120).returncode == 1
