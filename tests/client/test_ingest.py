"""The ingestion engine against a real `eotdlfs serve`: diff, carry, drop, resume, owners."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

from eotdlfs.client.api import ApiClient
from eotdlfs.client.errors import Forbidden, NotFound, NothingToIngest, Unreachable, VersionConflict
from eotdlfs.client.ingest import SourceFile, ingest_folder, run_ingest
from eotdlfs.client.ingest.ledger import DraftLedger, user_ledger
from eotdlfs.client.ingest.plan import MULTIPART_THRESHOLD
from eotdlfs.client.ingest.sources import RefusedSymlink
from eotdlfs.client.ingest.transfer import ChangedDuringIngest
from eotdlfs.client.repository import ApiRepository
from eotdlfs.client.settings import Settings
from eotdlfs.metadata import load_metadata
from client.helpers import assert_one_line_error, cli_env, client, make_folder, run_cli, write_metadata


@pytest.fixture(autouse=True)
def _own_hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EOTDLFS_CACHE_DIR", str(tmp_path / "hash-cache"))


def uploads_delta(before: dict, after: dict) -> dict:
    return {route: after["uploads"][route] - before["uploads"][route] for route in after["uploads"]}


def listing(api, record_id: str, version: int) -> dict[str, str]:
    return {f["filename"]: f["checksum"] for f in api.files("datasets", record_id, version)}


def local_listing(folder) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}


def test_change_one_of_500_then_delete_one(repo_server, unique_name, tmp_path):
    name = unique_name("five-hundred")
    folder = make_folder(tmp_path / "src", name, 499)  # + metadata.yml = 500 files
    api = client(repo_server)
    first = ingest_folder(api, "datasets", folder)
    assert (first.version, first.uploaded, first.carried, first.dropped) == (1, 500, 0, 0)
    v1 = local_listing(folder)

    (folder / "part3" / "file0003.txt").write_text("changed\n")
    before = repo_server.stats()
    second = ingest_folder(api, "datasets", folder)
    delta = uploads_delta(before, repo_server.stats())
    assert (second.version, second.uploaded, second.carried, second.dropped) == (2, 1, 499, 0)
    assert second.bytes_sent == len("changed\n")
    assert delta["batch"] == 1 and delta["file"] == delta["chunk"] == delta["complete"] == 0
    record_id = api.record_by_name("datasets", name)["id"]
    assert listing(api, record_id, 2) == local_listing(folder)
    assert listing(api, record_id, 1) == v1

    (folder / "part5" / "file0005.txt").unlink()
    before = repo_server.stats()
    third = ingest_folder(api, "datasets", folder)
    assert (third.version, third.uploaded, third.carried, third.dropped) == (3, 0, 499, 1)
    assert uploads_delta(before, repo_server.stats())["batch"] == 0
    v3 = listing(api, record_id, 3)
    assert "part5/file0005.txt" not in v3 and v3 == local_listing(folder)

    with pytest.raises(NothingToIngest, match="nothing changed since version 3"):
        ingest_folder(api, "datasets", folder)
    assert [v["version_id"] for v in api.record_by_name("datasets", name)["versions"]] == [1, 2, 3]

    # v1 still downloads byte-identical through `eotdlfs get`
    env = cli_env(tmp_path, repo_server.url, None)
    result = run_cli(env, "get", name, "-v", "1", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    got = tmp_path / "out" / name / "v1"
    assert str(got) in result.stdout
    assert local_listing(got) == v1
    before = repo_server.stats()
    again = run_cli(env, "get", name, "-v", "1", "--out", str(tmp_path / "out"))
    assert "0 downloaded, 500 already present" in again.stdout
    assert repo_server.stats()["downloads"] == before["downloads"]


def test_staged_sources_without_local_bytes_carry_and_rename(repo_server, unique_name, tmp_path):
    """What the staging flush passes: unchanged files by checksum only, a renamed file with no local bytes."""
    name = unique_name("staged")
    folder = make_folder(tmp_path / "src", name, 5)
    api = client(repo_server)
    ingest_folder(api, "datasets", folder)
    record_id = api.record_by_name("datasets", name)["id"]
    v1 = listing(api, record_id, 1)
    sources = [SourceFile(path, (folder / path).stat().st_size, checksum, None)
               for path, checksum in v1.items() if path != "part1/file0001.txt"]
    renamed = SourceFile("moved/file1.txt", 1, v1["part1/file0001.txt"], None)
    new_file = tmp_path / "new.txt"
    new_file.write_text("new")
    sources += [renamed, SourceFile("new.txt", 3, None, new_file)]
    result = run_ingest(api, "datasets", load_metadata(folder), sources)
    assert (result.uploaded, result.carried, result.dropped) == (1, 6, 1)  # the rename is a carry (any_path)
    v2 = listing(api, record_id, 2)
    assert v2["moved/file1.txt"] == v1["part1/file0001.txt"]
    assert "part1/file0001.txt" not in v2 and v2["new.txt"] == hashlib.sha1(b"new").hexdigest()


def test_a_source_whose_bytes_are_a_symlink_is_refused_before_anything_is_created(repo_server, unique_name, tmp_path):
    """The engine's own rule, for every caller (the staging flush passes its sources straight to it)."""
    name = unique_name("linked")
    folder = make_folder(tmp_path / "src", name, 1)
    (tmp_path / "secret").write_text("not for the public")
    (tmp_path / "staged-upper").symlink_to(tmp_path / "secret")
    sources = [SourceFile("metadata.yml", (folder / "metadata.yml").stat().st_size, None, folder / "metadata.yml"),
               SourceFile("data.txt", 18, None, tmp_path / "staged-upper")]
    with pytest.raises(RefusedSymlink, match=f"data.txt: its bytes at {tmp_path}/staged-upper are a symlink"):
        run_ingest(client(repo_server), "datasets", load_metadata(folder), sources)
    with pytest.raises(NotFound):
        client(repo_server).record_by_name("datasets", name)


def test_models_ingest_too(repo_server, unique_name, tmp_path):
    name = unique_name("model")
    folder = make_folder(tmp_path / "src", name, 3)
    result = ingest_folder(client(repo_server), "models", folder)
    assert (result.version, result.uploaded) == (1, 4)
    assert ApiRepository(client(repo_server)).record("models", name).published[0].number == 1


def test_a_big_file_changed_while_it_is_sent_in_parts_is_named_and_a_rerun_sends_its_new_bytes(
        repo_server, unique_name, tmp_path):
    """A file still being written (a download, a processing step) when ingested: sent in parts, it failed
    with the server's bare "Checksum mismatch.", naming no file (small files named it already)."""
    name = unique_name("growing")
    folder = make_folder(tmp_path / "src", name, 1)
    big = folder / "big.bin"
    big.write_bytes(os.urandom(MULTIPART_THRESHOLD + 1000))
    api = client(repo_server)
    start = api.start_multipart

    def written_meanwhile(*args, **kwargs):
        with open(big, "r+b") as f:  # a writer still at work after the hashing: same size, other bytes
            f.write(b"new bytes")
        return start(*args, **kwargs)

    api.start_multipart = written_meanwhile  # type: ignore[method-assign]
    with pytest.raises(ChangedDuringIngest, match=f"{big} changed while it was being ingested"):
        ingest_folder(api, "datasets", folder)
    api.start_multipart = start  # type: ignore[method-assign]
    assert ingest_folder(api, "datasets", folder).version == 1
    assert listing(api, api.record_by_name("datasets", name)["id"], 1)["big.bin"] == \
        hashlib.sha1(big.read_bytes()).hexdigest()


def test_another_owner_is_refused_naming_them(repo_server, unique_name, tmp_path):
    name = unique_name("owned")
    folder = make_folder(tmp_path / "src", name, 2)
    ingest_folder(client(repo_server, "alice"), "datasets", folder)
    (folder / "extra.txt").write_text("bob's")
    with pytest.raises(Forbidden, match="belongs to alice"):
        ingest_folder(client(repo_server, "bob"), "datasets", folder)
    record = client(repo_server).record_by_name("datasets", name)
    assert [v["version_id"] for v in record["versions"]] == [1] and not record.get("drafts")


def draft_holding(server, folder, path: str, data: bytes, ours: bool = True):
    """A new record for FOLDER with an open draft holding one file, as an interrupted ingest leaves it
    (OURS: recorded in this machine's draft ledger, as our own engine would have; else another writer's)."""
    api = client(server)
    api.create_record("datasets", load_metadata(folder))
    record_id = api.record_by_name("datasets", load_metadata(folder).name)["id"]
    draft = api.create_version("datasets", record_id, draft=True)
    if ours:
        user_ledger().record("datasets", record_id, draft)
    api.upload_file("datasets", record_id, draft, path, data, hashlib.sha1(data).hexdigest())
    return api, record_id, draft


def test_an_interrupted_draft_is_resumed_into_one_version(repo_server, unique_name, tmp_path):
    """A draft left with some files is finished by the next run: those files are not sent again."""
    name = unique_name("resume")
    folder = make_folder(tmp_path / "src", name, 20)
    meta = (folder / "metadata.yml").read_bytes()
    api, record_id, draft = draft_holding(repo_server, folder, "metadata.yml", meta)
    result = ingest_folder(api, "datasets", folder)
    assert (result.version, result.resumed, result.uploaded) == (draft, 1, 20)
    record = api.record_by_name("datasets", name)
    assert [v["version_id"] for v in record["versions"]] == [draft] and not record.get("drafts")


def test_another_writers_draft_is_never_filled_nor_published(repo_server, unique_name, tmp_path):
    """A draft in nobody's ledger here (another machine's, or an orphan of a killed run) stays as it is."""
    name = unique_name("foreign")
    folder = make_folder(tmp_path / "src", name, 5)
    meta = (folder / "metadata.yml").read_bytes()
    api, record_id, draft = draft_holding(repo_server, folder, "metadata.yml", meta, ours=False)
    result = ingest_folder(api, "datasets", folder)
    assert (result.version, result.resumed) == (draft + 1, 0)
    record = api.record_by_name("datasets", name)
    assert [v["version_id"] for v in record["versions"]] == [draft + 1]
    assert [d["version_id"] for d in record["drafts"]] == [draft]
    assert listing(api, record_id, draft) == {"metadata.yml": hashlib.sha1(meta).hexdigest()}
    assert user_ledger().draft("datasets", record_id) is None  # forgotten once published


def test_a_version_published_during_an_ingest_refuses_it_and_a_rerun_ingests_onto_it(
        repo_server, unique_name, tmp_path):
    """Another writer publishes v2 while our ingest (based on v1) fills its draft: ours is discarded, the error
    names v2; nothing mixed is published; the re-run ingests our folder onto v2."""
    name = unique_name("race")
    folder = make_folder(tmp_path / "src", name, 5)
    api = client(repo_server)
    ingest_folder(api, "datasets", folder)
    record_id = api.record_by_name("datasets", name)["id"]
    (folder / "ours.txt").write_text("ours\n")
    real_carry = api.carry

    def carry_after_another_writer_published(*args, **kwargs):
        other = client(repo_server)
        version = other.create_version("datasets", record_id, draft=True)
        other.carry("datasets", record_id, version, ["metadata.yml"], [local_listing(folder)["metadata.yml"]])
        other.publish("datasets", record_id, version, base=1)
        api.carry = real_carry
        return real_carry(*args, **kwargs)

    api.carry = carry_after_another_writer_published
    with pytest.raises(VersionConflict, match="Dataset version 3 was published meanwhile .*based on version 1"):
        ingest_folder(api, "datasets", folder)
    record = api.record_by_name("datasets", name)
    assert [v["version_id"] for v in record["versions"]] == [1, 3] and not record["drafts"]
    assert user_ledger().draft("datasets", record_id) is None
    result = ingest_folder(api, "datasets", folder)
    assert result.version == 4 and listing(api, record_id, 4) == local_listing(folder)


def test_cli_ingest_beaten_by_another_writer_fails_in_one_line_and_a_rerun_ingests_cleanly(
        repo_server, unique_name, tmp_path):
    """`eotdlfs ingest` is held at its batch upload (its draft v2 exists) while another machine (own ledger)
    publishes v3: the CLI publishes nothing, discards v2, says so in one line; the re-run makes v4."""
    from reliability.faultproxy import FaultProxy

    name = unique_name("cli-race")
    folder = make_folder(tmp_path / "src", name, 5)
    api = client(repo_server)
    ingest_folder(api, "datasets", folder)
    record_id = api.record_by_name("datasets", name)["id"]
    other = make_folder(tmp_path / "other" / "src", name, 5)
    (other / "theirs.txt").write_text("theirs\n")
    (folder / "ours.txt").write_text("ours\n")
    env = cli_env(tmp_path, None, repo_server.token("alice"))
    with FaultProxy(repo_server.url) as proxy:
        held = proxy.inject("slow", r"/batch\?", method="POST", delay=60, count=1)  # served; its answer waits
        proc = subprocess.Popen([sys.executable, "-m", "eotdlfs", "ingest", str(folder)],
                                env=dict(env, EOTDL_API_URL=proxy.url), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert held.struck.wait(60), proc.communicate(timeout=5)
            theirs = ingest_folder(api, "datasets", other, ledger=DraftLedger(tmp_path / "other" / "drafts.sqlite"))
            assert theirs.version == 3
        finally:
            proxy.clear()
            out, err = proc.communicate(timeout=60)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert_one_line_error(result, "Dataset version 3 was published meanwhile", "based on version 1", "run it again")
    record = api.record_by_name("datasets", name)
    assert [v["version_id"] for v in record["versions"]] == [1, 3] and not record["drafts"]
    assert listing(api, record_id, 3) == local_listing(other)
    rerun = run_cli(env | {"EOTDL_API_URL": repo_server.url}, "ingest", str(folder))
    assert rerun.returncode == 0, rerun.stderr
    assert f"{name} v4:" in rerun.stdout and listing(api, record_id, 4) == local_listing(folder)


def test_a_stale_draft_with_other_content_is_discarded(repo_server, unique_name, tmp_path):
    name = unique_name("stale")
    folder = make_folder(tmp_path / "src", name, 3)
    api, record_id, _ = draft_holding(repo_server, folder, "removed-since.txt", b"old")
    result = ingest_folder(api, "datasets", folder)
    record = api.record_by_name("datasets", name)
    assert [v["version_id"] for v in record["versions"]] == [result.version] and not record.get("drafts")
    assert "removed-since.txt" not in listing(api, record_id, result.version)


@pytest.mark.parametrize("sig, held_s", [(signal.SIGKILL, 30.0), (signal.SIGINT, 2.0)], ids=["kill-9", "ctrl-c"])
def test_killed_multipart_ingest_resumes_sending_only_missing_parts(repo_server, unique_name, tmp_path, sig, held_s):
    """kill -9 (or Ctrl-C) of `eotdlfs ingest` mid-upload of a 60 MiB file (6 parts, at most 4 in flight, the
    proxy holding their answers); the re-run sends only the missing parts, and one version results."""
    from reliability.faultproxy import FaultProxy

    name = unique_name("killed")
    folder = tmp_path / "src"
    write_metadata(folder, name)
    big = os.urandom(60 * 1024 * 1024)
    (folder / "big.bin").write_bytes(big)
    token = repo_server.token("alice")
    with FaultProxy(repo_server.url) as proxy:
        proxy.inject("slow", r"/chunk/", method="POST", delay=held_s)  # parts arrive; their answers wait
        before = repo_server.stats()
        proc = subprocess.Popen([sys.executable, "-m", "eotdlfs", "ingest", str(folder)],
                                env=cli_env(tmp_path, proxy.url, token), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while uploads_delta(before, repo_server.stats())["chunk"] < 2:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "no chunk reached the server in 60 s"
                time.sleep(0.05)
        finally:
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=30)
    if sig == signal.SIGINT:
        assert proc.returncode == 1 and "error: interrupted; run the same ingest again" in err.decode()
    received = uploads_delta(before, repo_server.stats())["chunk"]
    assert 2 <= received <= 4
    record = client(repo_server).record_by_name("datasets", name)
    assert record["versions"] == [] and len(record["drafts"]) == 1  # nothing visible to readers yet

    before = repo_server.stats()
    result = run_cli(cli_env(tmp_path, repo_server.url, token), "ingest", str(folder))
    assert result.returncode == 0, result.stderr
    delta = uploads_delta(before, repo_server.stats())
    assert delta["chunk"] == 6 - received and delta["complete"] == 1
    record = client(repo_server).record_by_name("datasets", name)
    assert [v["version_id"] for v in record["versions"]] == [1] and not record["drafts"]
    files = {f["filename"]: f["checksum"] for f in client(repo_server).files("datasets", record["id"], 1)}
    assert files["big.bin"] == hashlib.sha1(big).hexdigest()
    assert f"{name} v1: 2 uploaded, 0 carried, 0 removed" in result.stdout


def test_server_gone_mid_ingest_then_rerun_sends_nothing_twice(repo_server, unique_name, tmp_path):
    """The connection dies at the carry step (after the uploads): the error says the server is unreachable,
    readers see nothing, and the re-run finishes the same draft without sending the uploads again."""
    from reliability.faultproxy import FaultProxy

    name = unique_name("midway")
    folder = make_folder(tmp_path / "src", name, 30)
    ingest_folder(client(repo_server), "datasets", folder)
    (folder / "part0" / "file0000.txt").write_text("changed\n")
    with FaultProxy(repo_server.url) as proxy:
        broken = ApiClient(Settings(proxy.url, repo_server.token("alice"), None, 30), backoff=0.01)
        proxy.inject("drop", r"/files\?version=", method="POST")  # every carry request
        with pytest.raises(Unreachable):
            ingest_folder(broken, "datasets", folder)
    api = client(repo_server)
    record = api.record_by_name("datasets", name)
    assert [v["version_id"] for v in record["versions"]] == [1] and len(record["drafts"]) == 1
    before = repo_server.stats()
    result = ingest_folder(api, "datasets", folder)
    assert (result.version, result.uploaded, result.resumed, result.carried) == (2, 0, 1, 30)
    assert uploads_delta(before, repo_server.stats())["batch"] == 0
    assert listing(api, record["id"], 2) == local_listing(folder)


def test_a_server_without_drafts_gets_plain_versions(repo_server, unique_name, tmp_path, monkeypatch):
    """Against a server with no capabilities route (the official one), versions are created plain and
    nothing is published; the diff, carry and drop work the same."""
    name = unique_name("plain")
    folder = make_folder(tmp_path / "src", name, 4)
    api = client(repo_server)
    monkeypatch.setattr(api, "capabilities", lambda: {})
    assert ingest_folder(api, "datasets", folder).version == 1
    (folder / "part1" / "file0001.txt").unlink()
    second = ingest_folder(api, "datasets", folder)
    assert (second.version, second.uploaded, second.carried, second.dropped) == (2, 0, 4, 1)
    record = api.record_by_name("datasets", name)
    assert [v["version_id"] for v in record["versions"]] == [1, 2] and not record["drafts"]


def test_a_large_file_removed_then_restored_is_carried_not_resent(repo_server, unique_name, tmp_path):
    """v2 drops big.bin, v3 brings the same bytes back: the server already holds them (route 10 says
    'File already exists'), so the engine carries the file instead of sending 17 MiB again."""
    name = unique_name("restored")
    folder = make_folder(tmp_path / "src", name, 1)
    big = os.urandom(17 * 1024 * 1024)
    (folder / "big.bin").write_bytes(big)
    api = client(repo_server)
    ingest_folder(api, "datasets", folder)
    (folder / "big.bin").unlink()
    ingest_folder(api, "datasets", folder)
    (folder / "big.bin").write_bytes(big)
    before = repo_server.stats()
    third = ingest_folder(api, "datasets", folder)
    assert (third.version, third.bytes_sent) == (3, 0)
    assert uploads_delta(before, repo_server.stats())["chunk"] == 0
    record_id = api.record_by_name("datasets", name)["id"]
    assert listing(api, record_id, 3)["big.bin"] == hashlib.sha1(big).hexdigest()


def test_a_second_ingest_of_the_same_record_on_this_machine_is_refused(repo_server, unique_name, tmp_path):
    from eotdlfs.client.errors import Conflict
    from eotdlfs.client.ingest.lock import ingest_lock

    name = unique_name("locked")
    folder = make_folder(tmp_path / "src", name, 2)
    api = client(repo_server)
    with ingest_lock(api.base_url, "datasets", name):  # as a running flush of NAME holds it
        with pytest.raises(Conflict, match=f"another ingest of datasets/{name} is running"):
            ingest_folder(api, "datasets", folder)
        assert ingest_folder(api, "models", folder).version == 1  # another record: not blocked
    assert ingest_folder(api, "datasets", folder).version == 1
