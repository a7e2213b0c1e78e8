"""`eotdlfs ingest`, `get` and `list` as a user runs them: one-line errors, exit codes, nothing half-created."""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from client.helpers import (CLI_TIMEOUT_S, OUTSIDE_LINKS, assert_one_line_error, cli_env, client, make_folder, make_outside_link,
                            run_cli, write_metadata)
from eotdlfs.client.errors import NotFound
from tests.reliability.faultproxy import FaultProxy


def no_record(server, name: str) -> bool:
    try:
        client(server).record_by_name("datasets", name)
    except NotFound:
        return True
    return False


@pytest.mark.parametrize(
    "overrides, fragments",
    [
        ({"name": "x"}, ["name: must be 3 to 45 characters long"]),
        ({"name": "9starts-with-digit"}, ["name: may use only letters"]),
        ({"name": '"ends-with-newline\\n"'}, ["name: may use only letters"]),  # a record 'NAME\n' was made
        ({"authors": None}, ["authors: is required"]),
        ({"license": None}, ["license: is required"]),
        ({"source": "ftp://example.org"}, ["source: must be a URL starting with http"]),
        ({"authors": "{a: 1}"}, ["authors: must be a list of names"]),
        ({"license": "[unclosed"}, ["metadata.yml: is not valid YAML"]),
        ({"notes": "n" * (1 << 20)}, ["metadata.yml: is 1,048,6", "more than the 1,048,576"]),  # it was parsed
    ],
)
def test_metadata_errors_name_field_and_rule_and_touch_nothing(repo_server, unique_name, tmp_path, overrides, fragments):
    name = unique_name("meta")
    folder = make_folder(tmp_path / "src", name, 2)
    fields = {"name": name, **overrides}
    write_metadata(folder, **fields)
    result = run_cli(cli_env(tmp_path, repo_server.url, repo_server.token("alice")), "ingest", str(folder))
    assert_one_line_error(result, *fragments)
    assert no_record(repo_server, name)


def test_a_folder_with_neither_root_file_names_both_kinds(repo_server, tmp_path):
    """It said 'metadata.yml: not found', as if a STAC catalog.json (a Q1+ dataset) would not do."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "data.txt").write_text("x")
    result = run_cli(cli_env(tmp_path, repo_server.url, repo_server.token("alice")), "ingest", str(tmp_path / "src"))
    assert_one_line_error(result, "metadata.yml or catalog.json: neither found in", "STAC")


def test_dead_server_then_a_second_run_succeeds(repo_server, unique_name, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/"  # bound, never listening: refused
        name = unique_name("dead")
        folder = make_folder(tmp_path / "src", name, 3)
        token = repo_server.token("alice")
        result = run_cli(cli_env(tmp_path, dead, token), "ingest", str(folder))
    assert_one_line_error(result, f"cannot reach the repository at {dead}", "Connection refused")
    ok = run_cli(cli_env(tmp_path, repo_server.url, token), "ingest", str(folder))
    assert ok.returncode == 0 and f"{name} v1: 4 uploaded" in ok.stdout, ok.stderr


def test_bad_token_gives_the_server_detail_and_creates_nothing(repo_server, unique_name, tmp_path):
    name = unique_name("badtoken")
    folder = make_folder(tmp_path / "src", name, 2)
    result = run_cli(cli_env(tmp_path, repo_server.url, "not-a-valid-token"), "ingest", str(folder))
    line = assert_one_line_error(result)
    assert "token" in line.lower()
    assert no_record(repo_server, name)
    ok = run_cli(cli_env(tmp_path, repo_server.url, repo_server.token("alice")), "ingest", str(folder))
    assert ok.returncode == 0, ok.stderr


def test_no_credentials_at_all(repo_server, unique_name, tmp_path):
    name = unique_name("anon")
    folder = make_folder(tmp_path / "src", name, 1)
    assert_one_line_error(run_cli(cli_env(tmp_path, repo_server.url, None), "ingest", str(folder)))
    assert no_record(repo_server, name)


def test_another_owners_name(repo_server, unique_name, tmp_path):
    name = unique_name("theirs")
    folder = make_folder(tmp_path / "src", name, 2)
    assert run_cli(cli_env(tmp_path, repo_server.url, repo_server.token("alice")), "ingest", str(folder)).returncode == 0
    (folder / "more.txt").write_text("more")
    result = run_cli(cli_env(tmp_path, repo_server.url, repo_server.token("mallory")), "ingest", str(folder))
    assert_one_line_error(result, name, "belongs to alice")
    record = client(repo_server).record_by_name("datasets", name)
    assert [v["version_id"] for v in record["versions"]] == [1] and not record["drafts"]


def test_nothing_changed_says_so_and_succeeds(repo_server, unique_name, tmp_path):
    name = unique_name("same")
    folder = make_folder(tmp_path / "src", name, 2)
    env = cli_env(tmp_path, repo_server.url, repo_server.token("alice"))
    assert run_cli(env, "ingest", str(folder)).returncode == 0
    again = run_cli(env, "ingest", str(folder))
    assert again.returncode == 0 and "nothing changed since version 1; no version created" in again.stdout


def test_list_and_get_errors(repo_server, unique_name, tmp_path):
    name = unique_name("listed")
    folder = make_folder(tmp_path / "src", name, 2)
    env = cli_env(tmp_path, repo_server.url, repo_server.token("alice"))
    assert run_cli(env, "ingest", str(folder)).returncode == 0
    listed = run_cli(env, "list", "--match", name.upper())
    assert listed.returncode == 0
    row = next(line for line in listed.stdout.splitlines() if name in line)
    assert row.split()[:3] == [name, "1", "v1"] and "alice" in row
    assert_one_line_error(run_cli(env, "get", name, "-v", "7", "--out", str(tmp_path)), "has versions 1")
    missing = unique_name("nope")
    assert_one_line_error(run_cli(env, "get", missing, "--out", str(tmp_path)), f"Dataset '{missing}' doesn't exist")
    assert_one_line_error(run_cli(env, "list", "--kind", "things"), "unknown kind")


def test_get_default_is_latest(repo_server, unique_name, tmp_path):
    name = unique_name("latest")
    folder = make_folder(tmp_path / "src", name, 2)
    env = cli_env(tmp_path, repo_server.url, repo_server.token("alice"))
    run_cli(env, "ingest", str(folder))
    (folder / "v2-only.txt").write_text("2")
    run_cli(env, "ingest", str(folder))
    result = run_cli(env, "get", name, "--out", str(tmp_path / "out"))
    assert result.returncode == 0 and (tmp_path / "out" / name / "v2" / "v2-only.txt").read_text() == "2"


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_get_gives_its_files_the_mode_the_umask_asks(repo_server, unique_name, tmp_path, umask):
    """They were 0600 whatever the umask (their temp file's mode), so a `get` into a group's project
    folder made files the rest of the group could not read."""
    name = unique_name("modes")
    folder = make_folder(tmp_path / "src", name, 3)
    env = cli_env(tmp_path, repo_server.url, repo_server.token("alice"))
    assert run_cli(env, "ingest", str(folder)).returncode == 0
    got = subprocess.run([sys.executable, "-m", "eotdlfs", "get", name, "--out", str(tmp_path / "out")], env=env,
                         capture_output=True, text=True, timeout=CLI_TIMEOUT_S, preexec_fn=lambda: os.umask(umask))
    assert got.returncode == 0, got.stderr
    files = [p for p in (tmp_path / "out" / name / "v1").rglob("*") if p.is_file()]
    assert len(files) == 4 and {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o666 & ~umask)}


def test_get_writes_files_whose_names_are_255_bytes(repo_server, unique_name, tmp_path):
    """A name may have 255 bytes (NAME_MAX); the temp file `get` downloads it into must fit too."""
    name = unique_name("longname")
    folder = make_folder(tmp_path / "src", name, 1)
    longest = {"x" * 255: b"ascii", "é" * 127 + "x": b"two bytes a letter"}
    for filename, data in longest.items():
        (folder / filename).write_bytes(data)
    env = cli_env(tmp_path, repo_server.url, repo_server.token("alice"))
    assert run_cli(env, "ingest", str(folder)).returncode == 0
    got = run_cli(env, "get", name, "--out", str(tmp_path / "out"))
    assert got.returncode == 0, got.stderr
    for filename, data in longest.items():
        assert (tmp_path / "out" / name / "v1" / filename).read_bytes() == data


def test_a_get_killed_mid_file_leaves_no_temp_file_once_run_again(repo_server, unique_name, tmp_path):
    """`eotdlfs get` killed (kill -9, a lost terminal) while a file downloaded left its `.NAME.XXXXXXXX.part`
    for good: the re-run downloaded into a temp file of another name, and an ingest of the copy (the
    guide's recipe) then published the leftover too."""
    name = unique_name("killed")
    folder = make_folder(tmp_path / "src", name, 2)
    env = cli_env(tmp_path, repo_server.url, repo_server.token("alice"))
    assert run_cli(env, "ingest", str(folder)).returncode == 0
    out = tmp_path / "out"
    with FaultProxy(repo_server.url) as proxy:
        proxy.inject("slow", r"/download/", delay=60)  # held: each file's temp is made, its bytes never come
        getting = subprocess.Popen([sys.executable, "-m", "eotdlfs", "get", name, "--out", str(out)],
                                   env={**env, "EOTDL_API_URL": proxy.url}, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not list(out.rglob("*.part")) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert list(out.rglob("*.part")), "get made no temp file within 30 s"
        finally:
            getting.kill()
            getting.wait(10)
    got = run_cli(env, "get", name, "--out", str(out))
    assert got.returncode == 0, got.stderr
    copy = out / name / "v1"
    assert sorted(str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file()) == \
        sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_without_an_api_url_the_embedded_repository_is_used(unique_name, tmp_path):
    env = cli_env(tmp_path, None, None)  # own HOME: the embedded repository lives in its data dir
    listed = run_cli(env, "list")
    assert listed.returncode == 0 and "sample-scenes" in listed.stdout, listed.stderr
    name = unique_name("local")
    folder = make_folder(tmp_path / "src", name, 2)
    assert f"{name} v1: 3 uploaded" in run_cli(env, "ingest", str(folder)).stdout
    got = run_cli(env, "get", name, "--out", str(tmp_path / "out"))
    assert got.returncode == 0 and (tmp_path / "out" / name / "v1" / "metadata.yml").is_file(), got.stderr


@pytest.mark.parametrize("case", OUTSIDE_LINKS)
def test_a_link_out_of_the_folder_fails_naming_it_and_creates_nothing(repo_server, unique_name, tmp_path, case):
    folder, link, target = make_outside_link(tmp_path, case)
    name = unique_name("escape")
    write_metadata(folder, name)
    result = run_cli(cli_env(tmp_path, repo_server.url, repo_server.token("alice")), "ingest", str(folder))
    line = assert_one_line_error(result, "leads outside", str(folder))
    assert f"{folder / link}: symlink to {target}" in line or case == "chain"  # chain: either of its two links
    assert no_record(repo_server, name)


def test_a_link_out_of_an_ingested_folder_makes_no_draft(repo_server, unique_name, tmp_path):
    name = unique_name("escape")
    folder = make_folder(tmp_path / "src", name, 2)
    env = cli_env(tmp_path, repo_server.url, repo_server.token("alice"))
    assert run_cli(env, "ingest", str(folder)).returncode == 0
    (tmp_path / "shadow").write_text("root:$6$secret")
    (folder / "shadow_link").symlink_to(tmp_path / "shadow")
    before = repo_server.stats()["uploads"]
    assert_one_line_error(run_cli(env, "ingest", str(folder)), f"{folder}/shadow_link: symlink to {tmp_path}/shadow")
    record = client(repo_server).record_by_name("datasets", name)
    assert [v["version_id"] for v in record["versions"]] == [1] and not record["drafts"]
    assert repo_server.stats()["uploads"] == before


REFUSED_FILE_NAMES = {  # a file name on disk (bytes) -> what the error says of it
    "not UTF-8": (b"caf\xe9.tif", "file path b'part0/caf\\xe9.tif' is not UTF-8 text"),
    "tab": (b"a\tb.tif", "file path 'part0/a\\tb.tif' contains a control character"),
}


@pytest.mark.parametrize("case", REFUSED_FILE_NAMES)
def test_a_file_name_the_repository_refuses_fails_naming_it_before_anything_is_hashed(repo_server, unique_name,
                                                                                     tmp_path, case):
    """A name of Latin-1 bytes (a folder from an old system or a zip) failed with a bare "'utf-8' codec can't
    encode character '\\udce9'", naming no file; a tab was named, but only once every file was hashed."""
    raw, said = REFUSED_FILE_NAMES[case]
    name = unique_name("badname")
    folder = make_folder(tmp_path / "src", name, 3)
    (folder / "part0" / os.fsdecode(raw)).write_bytes(b"bytes")
    env = cli_env(tmp_path, repo_server.url, repo_server.token("alice"))
    assert_one_line_error(run_cli(env, "ingest", str(folder)), said, "rename it" if case == "not UTF-8" else "")
    assert no_record(repo_server, name)
    hashes = tmp_path / "hash-cache" / "hashes.sqlite"
    with closing(sqlite3.connect(hashes)) as db:
        assert db.execute("SELECT count(*) FROM file_hashes").fetchone()[0] == 0


def test_links_inside_the_folder_are_ingested_as_cp_rL_would_copy_them(repo_server, unique_name, tmp_path):
    name = unique_name("inside")
    folder = make_folder(tmp_path / "src", name, 1)
    (folder / "scenes").mkdir()
    (folder / "scenes" / "a.tif").write_bytes(b"scene a")
    (folder / "latest.tif").symlink_to("scenes/a.tif")
    (folder / "current").symlink_to("scenes")
    env = cli_env(tmp_path, repo_server.url, repo_server.token("alice"))
    result = run_cli(env, "ingest", str(folder))
    # the scene's bytes cross the wire once; its two other paths carry them
    assert result.returncode == 0 and f"{name} v1: 3 uploaded, 2 carried" in result.stdout, result.stderr
    api = client(repo_server)
    files = {f["filename"]: f["checksum"] for f in api.files("datasets", api.record_by_name("datasets", name)["id"], 1)}
    scene = hashlib.sha1(b"scene a").hexdigest()
    assert files["scenes/a.tif"] == files["latest.tif"] == files["current/a.tif"] == scene
    got = run_cli(env, "get", name, "--out", str(tmp_path / "out"))
    v1 = tmp_path / "out" / name / "v1"
    assert got.returncode == 0 and not (v1 / "current").is_symlink() and (v1 / "current" / "a.tif").read_bytes() == b"scene a"


def test_token_file_and_standard_input_keep_the_token_out_of_the_command_line(repo_server, unique_name, tmp_path):
    name = unique_name("tokenfile")
    folder = make_folder(tmp_path / "src", name, 2)
    env = cli_env(tmp_path, repo_server.url, None)  # no EOTDL_TOKEN: the file is the only credential
    token_file = tmp_path / "token"
    token_file.write_text(repo_server.token("alice") + "\n")
    token_file.chmod(0o600)
    done = run_cli(env, "ingest", str(folder), "--token-file", str(token_file))
    assert done.returncode == 0 and f"{name} v1: 3 uploaded" in done.stdout, done.stderr
    assert client(repo_server).record_by_name("datasets", name)["uid"] == "alice"
    (folder / "more.txt").write_text("more")
    piped = subprocess.run([sys.executable, "-m", "eotdlfs", "ingest", str(folder), "--token-file", "-"], env=env,
                           input=repo_server.token("alice"), capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert piped.returncode == 0 and f"{name} v2: 1 uploaded" in piped.stdout, piped.stderr
    listed = run_cli(env, "list", "--match", name, "--token-file", str(token_file))
    assert listed.returncode == 0 and name in listed.stdout


def test_a_bad_token_file_fails_in_one_line_and_creates_nothing(repo_server, unique_name, tmp_path):
    name = unique_name("tokenfile")
    folder = make_folder(tmp_path / "src", name, 1)
    env = cli_env(tmp_path, repo_server.url, None)
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "two").write_text("a b\n")
    assert_one_line_error(run_cli(env, "ingest", str(folder), "--token-file", str(tmp_path / "missing")),
                          f"cannot read the token file {tmp_path / 'missing'}: No such file or directory")
    assert_one_line_error(run_cli(env, "ingest", str(folder), "--token-file", str(tmp_path / "empty")),
                          "must hold the token alone, found nothing")
    assert_one_line_error(run_cli(env, "get", name, "--token-file", str(tmp_path / "two")), "found 2 words")
    assert_one_line_error(run_cli(env, "ingest", str(folder), "--token", "T", "--token-file", str(tmp_path / "two")),
                          "give --token or --token-file, not both")
    assert no_record(repo_server, name)


@pytest.mark.parametrize("command", ["ingest", "get", "list"])
def test_help_says_token_shows_in_ps_and_offers_a_token_file(tmp_path, command):
    shown = run_cli(cli_env(tmp_path, None, None), command, "--help")
    text = " ".join(shown.stdout.replace("│", " ").split())
    assert shown.returncode == 0 and "sees it in `ps`" in text and "--token-file" in text, shown.stdout


@pytest.mark.parametrize("url", ["127.0.0.1:{port}", "ftp://127.0.0.1:{port}/", "http://", "not a url"])
def test_an_api_url_that_is_not_http_fails_naming_it(repo_server, tmp_path, url):
    """A URL without http:// (the usual slip: host:port) is named as such, not requests' 'No connection adapters'."""
    url = url.format(port=repo_server.port)
    assert_one_line_error(run_cli(cli_env(tmp_path, url, None), "list"), f"API URL {url!r}", "http://")


def test_ingest_of_a_path_that_is_not_a_folder_says_so(repo_server, tmp_path):
    """A typo'd path was 'metadata.yml: not found in PATH', as if the folder lacked only that."""
    env = cli_env(tmp_path, repo_server.url, repo_server.token("alice"))
    missing, file = tmp_path / "no-such-folder", tmp_path / "a-file"
    file.write_text("x")
    assert_one_line_error(run_cli(env, "ingest", str(missing)), f"no such folder: {missing}")
    assert_one_line_error(run_cli(env, "ingest", str(file)), f"a file, not a folder: {file}")


@pytest.mark.parametrize("command", [["list"], ["get", "some-name"], ["stac", "search", "some-name"]],
                         ids=["list", "get", "stac-search"])
def test_a_silent_server_costs_one_timeout_not_one_per_retry(repo_server, tmp_path, command):
    """A server that takes the connection and never answers: the read timed out was asked again
    3 times, so `list` with EOTDLFS_TIMEOUT=5 failed after 23 s (4 min at the default 60 s)."""
    from reliability.faultproxy import FaultProxy

    with FaultProxy(repo_server.url) as proxy:
        silence = proxy.inject("silent", method="GET", delay=30.0)  # HEAD (the liveness check) goes through
        env = {**cli_env(tmp_path, proxy.url, None), "EOTDLFS_TIMEOUT": "2"}
        result = run_cli(env, *command, "--out", str(tmp_path)) if command[0] == "get" else run_cli(env, *command)
        assert_one_line_error(result, "cannot reach the repository", "timed out")
        assert silence.hits == 1, silence.hits


def test_an_ingest_keeps_its_cache_dir_to_its_user_under_a_lax_umask(repo_server, unique_name, tmp_path):
    """The drafts ledger and the hash cache name every file ingested; with umask 022 an ingest run
    before any mount left them readable by all, where a mount makes the same dir 0700."""
    env = cli_env(tmp_path, repo_server.url, repo_server.token("alice"))
    env.pop("EOTDLFS_CACHE_DIR")
    folder = make_folder(tmp_path / "src", unique_name("private"), 2)
    result = subprocess.run([sys.executable, "-m", "eotdlfs", "ingest", str(folder)], env=env, capture_output=True,
                            text=True, timeout=CLI_TIMEOUT_S, preexec_fn=lambda: os.umask(0o022))
    assert result.returncode == 0, result.stderr
    cache = tmp_path / "home" / ".cache" / "eotdlfs"
    assert (cache / "drafts.sqlite").is_file() and (cache / "hashes.sqlite").is_file()
    assert {oct(p.stat().st_mode & 0o777) for p in (cache, cache / "locks")} == {oct(0o700)}


def test_an_ingest_closes_a_cache_dir_left_open_to_other_users(repo_server, unique_name, tmp_path):
    """A cache dir made 0755 by hand or by an older eotdlfs, with a 0644 hash cache in it, stayed open:
    only a mount closed it. An ingest closes it and what is in it too."""
    env = cli_env(tmp_path, repo_server.url, repo_server.token("alice"))
    cache = Path(env["EOTDLFS_CACHE_DIR"])
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "hashes.sqlite").write_bytes(b"")
    (cache / "hashes.sqlite").chmod(0o644)
    cache.chmod(0o755)
    folder = make_folder(tmp_path / "src", unique_name("closed"), 2)
    result = run_cli(env, "ingest", str(folder))
    assert result.returncode == 0, result.stderr
    assert {oct(p.stat().st_mode & 0o777) for p in (cache, cache / "locks")} == {oct(0o700)}
    assert oct((cache / "hashes.sqlite").stat().st_mode & 0o777) == oct(0o600)


def test_an_ingest_whose_cache_dir_cannot_be_made_says_so_and_how_to_move_it(repo_server, unique_name, tmp_path):
    """A read-only home on a cluster node: the error was a bare "No such file or directory"."""
    env = cli_env(tmp_path, repo_server.url, repo_server.token("alice"))
    (tmp_path / "a-file").write_bytes(b"")
    env["EOTDLFS_CACHE_DIR"] = str(tmp_path / "a-file" / "cache")
    folder = make_folder(tmp_path / "src", unique_name("nocache"), 2)
    result = run_cli(env, "ingest", str(folder))
    assert result.returncode == 1 and "cannot make the cache dir" in result.stderr, result.stderr
    assert "EOTDLFS_CACHE_DIR" in result.stderr and env["EOTDLFS_CACHE_DIR"] in result.stderr
    assert "Traceback" not in result.stderr


def test_a_reingest_with_a_new_license_in_metadata_yml_gives_the_record_that_license(repo_server, unique_name,
                                                                                     tmp_path):
    """The record's fields were set at creation only: the new metadata.yml was published as a file
    while `list` and every record lookup kept the old license and authors."""
    name = unique_name("relicense")
    folder = make_folder(tmp_path / "src", name, 2)
    env = cli_env(tmp_path, repo_server.url, repo_server.token("alice"))
    assert run_cli(env, "ingest", str(folder)).returncode == 0
    write_metadata(folder, name, license="CC-BY-4.0", authors="[tester, other]")
    again = run_cli(env, "ingest", str(folder))
    assert again.returncode == 0, again.stderr
    assert "v2: 1 uploaded" in again.stdout and "the record's authors, license updated" in again.stdout
    record = client(repo_server).record_by_name("datasets", name)
    assert (record["license"], record["authors"]) == ("CC-BY-4.0", ["tester", "other"])
