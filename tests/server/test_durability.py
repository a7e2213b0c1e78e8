"""Nothing is lost across a restart, and concurrent writers never collide."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

from serverapi import Api, sha1


def test_restart_between_ingest_and_download(fresh_server, unique_name):
    api = Api(fresh_server, "datasets", fresh_server.token("alice"))
    models = api.of_kind("models")
    name = unique_name("restart")
    rid, mid = api.create(name), models.create(name)
    api.new_version(rid)
    models.new_version(mid)
    files = {"a.txt": b"alpha", "dir/b.bin": bytes(range(256)) * 100}
    assert api.batch(rid, 1, files).status_code == 200
    assert models.batch(mid, 1, {"w.pt": b"weights"}).status_code == 200
    api.new_version(rid, draft=True)
    big = b"B" * 300_000
    upload_id = api.post(f"datasets/{rid}/uploadId", json={"filname": "big", "checksum": sha1(big)}).json()["upload_id"]
    part1 = big[:200_000]
    api.post(f"datasets/chunk/{upload_id}", files={"file": ("p", part1)},
             data={"part_number": 1, "checksum": hashlib.md5(part1).hexdigest()})
    token_before = api.headers

    fresh_server.restart()

    assert fresh_server.stats()["bytes_sent"] == 0  # counters are since start
    record = api.record(name)
    assert [v["version_id"] for v in record["versions"]] == [1]
    assert [d["version_id"] for d in record["drafts"]] == [2]
    for path, data in files.items():
        assert api.download(rid, path).content == data
    assert models.download(mid, "w.pt").content == b"weights"
    # the old token still works (the secret is kept in the root), and the upload resumes
    assert api.headers == token_before
    again = api.post(f"datasets/{rid}/uploadId", json={"filname": "big", "checksum": sha1(big)}).json()
    assert again == {"upload_id": upload_id, "parts": [1]}
    part2 = big[200_000:]
    api.post(f"datasets/chunk/{upload_id}", files={"file": ("p", part2)},
             data={"part_number": 2, "checksum": hashlib.md5(part2).hexdigest()})
    assert api.post(f"datasets/complete/{upload_id}?version=2").status_code == 200
    assert api.carry(rid, 2, {"a.txt": sha1(b"alpha")}).status_code == 200
    assert api.post(f"datasets/{rid}/publish?version=2").status_code == 200
    fresh_server.restart()
    assert [v["version_id"] for v in api.record(name)["versions"]] == [1, 2]
    assert api.download(rid, "big").content == big
    assert fresh_server.blob_store().leftovers(set()) == []  # no part, no temp file


def test_concurrent_writers(repo_server, unique_name):
    api = Api(repo_server, "datasets", repo_server.token("alice"))
    name = unique_name("conc")
    rid = api.create(name)
    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(lambda _: api.new_version(rid), range(16)))
    assert sorted(versions) == list(range(1, 17))

    def ingest(v: int) -> int:
        return api.batch(rid, v, {"shared": f"v{v}".encode(), f"only-{v}": b"x"}).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(ingest, range(1, 17))) == {200}
    shared = sorted(f["version"] for f in api.files(rid) if f["filename"] == "shared")
    assert shared == list(range(1, 17))  # every distinct content got its own file version
    for v in range(1, 17):
        files = {f["filename"]: f for f in api.files(rid, v)}
        assert set(files) == {"shared", f"only-{v}"}
        assert api.download(rid, "shared", files["shared"]["version"]).content == f"v{v}".encode()

    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda v: api.download(rid, f"only-{v}").content, range(1, 17)))
    assert bodies == [b"x"] * 16


def test_stale_temp_files_are_removed_at_start(local_only, fresh_server):
    import os
    import time

    tmp = fresh_server.root / "blobs" / "tmp"
    old, new = tmp / "stage-old", tmp / "stage-new"
    old.write_bytes(b"left by a crash")
    new.write_bytes(b"a live request's")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    fresh_server.restart()
    assert not old.exists() and new.exists()


def test_stale_and_orphan_uploads_are_dropped_at_start(local_only, fresh_server, unique_name):
    import sqlite3

    api = Api(fresh_server, "datasets", fresh_server.token("alice"))
    rid = api.create(unique_name("gc"))
    ids = []
    for path in ("old", "recent"):
        r = api.post(f"datasets/{rid}/uploadId", json={"filname": path, "checksum": sha1(path.encode())})
        ids.append(r.json()["upload_id"])
        api.post(f"datasets/chunk/{ids[-1]}", files={"file": ("p", b"x")},
                 data={"part_number": 1, "checksum": hashlib.md5(b"x").hexdigest()})
    orphan = fresh_server.root / "uploads" / ("f" * 32)
    orphan.mkdir()
    (orphan / "1").write_bytes(b"nobody's")
    fresh_server.stop()
    with sqlite3.connect(fresh_server.root / "repository.db") as db:
        db.execute("UPDATE uploads SET created_at = '2000-01-01T00:00:00+00:00' WHERE upload_id = ?", (ids[0],))
    fresh_server.start()
    assert sorted(p.name for p in (fresh_server.root / "uploads").iterdir()) == [ids[1]]
    r = api.post(f"datasets/chunk/{ids[0]}", files={"file": ("p", b"x")},
                 data={"part_number": 2, "checksum": hashlib.md5(b"x").hexdigest()})
    assert r.json() == {"detail": "Upload Id not found."}


def test_readers_during_writes(repo_server, unique_name):
    import threading

    api = Api(repo_server, "datasets", repo_server.token("alice"))
    rid = api.create(unique_name("rw"))
    api.new_version(rid)
    base = bytes(range(256)) * 400
    api.batch(rid, 1, {"base.bin": base})
    stop, failures = threading.Event(), []

    def read() -> None:
        import requests

        s = requests.Session()
        while not stop.is_set():
            r = s.get(api.url + f"datasets/{rid}/download/base.bin", headers={"Range": "bytes=1000-60999"})
            if r.status_code != 206 or r.content != base[1000:61000]:
                failures.append(r.status_code)
            if s.get(api.url + f"datasets/{rid}/files?version=1").status_code != 200:
                failures.append("list")

    readers = [threading.Thread(target=read) for _ in range(4)]
    for t in readers:
        t.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            versions = list(pool.map(lambda _: api.new_version(rid, draft=True), range(8)))
            results = list(pool.map(lambda v: api.batch(rid, v, {f"f{v}": b"x" * v, "base.bin": base}).status_code,
                                    versions))
    finally:
        stop.set()
        for t in readers:
            t.join(30)
    assert results == [200] * 8 and failures == []
    assert all(api.files(rid, v) for v in versions)


def test_old_database_gets_version_sizes(tmp_path):
    """A repository made before versions stored their size is migrated when opened."""
    import io
    import sqlite3

    from eotdlfs.server.store import Store

    root = tmp_path / "root"
    store = Store(root)
    rid = store.create_record("datasets", "u", {"name": "old-db", "authors": ["a"], "source": "http://x",
                                                "license": "MIT"})
    v = store.create_version("datasets", rid, "u")
    store.ingest_file("datasets", rid, "u", v, "a", io.BytesIO(b"12345"), sha1(b"12345"))
    store.ingest_file("datasets", rid, "u", v, "b", io.BytesIO(b"678"), sha1(b"678"))
    with sqlite3.connect(root / "repository.db") as db:  # back to the old schema
        db.execute("DROP TABLE version_sizes")
    assert Store(root).record_by_name("datasets", "old-db")["versions"][0]["size"] == 8
