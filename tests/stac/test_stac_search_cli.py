"""`eotdlfs stac search` on a published version, through the API and through a real mount."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eotdlfs.client.hashcache import HashCache
from eotdlfs.client.ingest import run_ingest
from eotdlfs.client.ingest.stac import stac_sources
from eotdlfs.stac.search import INDEX_FILE, parse_bbox, parse_interval
from client.helpers import assert_one_line_error, cli_env, client, run_cli, write_metadata
from tests.stac.catalogs import write_catalog
from tests.stac.test_search import brute_force

BBOX, DATETIME = "-60,-40,60,40", "2020-03-01T00:00:00Z/2020-12-31T00:00:00Z"
ITEMS = 60


@pytest.fixture(autouse=True)
def _own_hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EOTDLFS_CACHE_DIR", str(tmp_path / "hash-cache"))


def expected(folder: Path, prefix: str) -> list[str]:
    items = [(p.relative_to(folder).as_posix(), json.loads(p.read_text()))
             for p in sorted((folder / "scenes" / "items").glob("*/*.json"))]
    return [f"{prefix}/{path}" for path in brute_force(items, parse_bbox(BBOX), parse_interval(DATETIME))]


def search(server, tmp_path, name, *args) -> list[str]:
    result = run_cli(cli_env(tmp_path, server.url, server.token("alice")), "stac", "search", name,
                     "--bbox", BBOX, "--datetime", DATETIME, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_search_reads_the_index_alone_and_finds_what_a_scan_finds(repo_server, unique_name, tmp_path,
                                                                  mount_factory):
    name = unique_name("stac-search")
    folder = write_catalog(tmp_path / "src", items=ITEMS, name=name)
    write_metadata(folder, name)
    ingested = run_cli(cli_env(tmp_path, repo_server.url, repo_server.token("alice")), "ingest", str(folder))
    assert ingested.returncode == 0 and ingested.stdout.startswith(f"{name} v1: "), ingested.stderr
    wanted = expected(folder, f"datasets/{name}/v1")
    assert 0 < len(wanted) < ITEMS
    downloads = repo_server.stats()["downloads"]
    assert search(repo_server, tmp_path, name) == wanted
    assert repo_server.stats()["downloads"] - downloads == 1  # the index, not 60 item documents

    mnt = mount_factory(repo_server)
    on_mount = search(repo_server, tmp_path, name, "-v", "1", "--mount", str(mnt.path))
    assert on_mount == [f"{mnt.path}/{path}" for path in wanted]
    assert all(Path(path).is_file() for path in on_mount)
    features = json.loads("".join(search(repo_server, tmp_path, name, "--json")))["features"]
    assert [f"datasets/{name}/v1/scenes/items/{f['id']}/{f['id']}.json" for f in features] == wanted


def test_a_version_without_the_index_is_indexed_from_its_documents(repo_server, unique_name, tmp_path):
    name = unique_name("stac-noindex")
    folder = write_catalog(tmp_path / "src", items=ITEMS, name=name)
    write_metadata(folder, name)
    cache = HashCache()
    try:
        metadata, sources = stac_sources(folder, cache, tmp_path / "scratch")
    finally:
        cache.close()
    run_ingest(client(repo_server), "datasets", metadata, [s for s in sources if s.path != INDEX_FILE])
    assert search(repo_server, tmp_path, name) == expected(folder, f"datasets/{name}/v1")


def test_bad_queries_are_one_line_errors(repo_server, tmp_path):
    result = run_cli(cli_env(tmp_path, repo_server.url, None), "stac", "search", "any-name", "--bbox", "1,2,3")
    assert_one_line_error(result, "bbox '1,2,3': four numbers W,S,E,N expected")


def test_search_on_a_mount_prints_the_version_searched_and_names_the_versions_there(repo_server, unique_name,
                                                                                    tmp_path, mount_factory):
    """Without -v the paths went through `latest`, which names another version once one is published
    between the search and the read; `-v 99` said "not a STAC version on this mount"."""
    name = unique_name("stac-latest")
    folder = write_catalog(tmp_path / "src", items=8, name=name)
    write_metadata(folder, name)
    assert run_cli(cli_env(tmp_path, repo_server.url, repo_server.token("alice")), "ingest", str(folder)).returncode == 0
    mnt = mount_factory(repo_server)
    env = cli_env(tmp_path, repo_server.url, None)
    found = run_cli(env, "stac", "search", name, "--mount", str(mnt.path))
    assert found.returncode == 0 and found.stdout, found.stderr
    assert all(line.startswith(f"{mnt.path}/datasets/{name}/v1/") for line in found.stdout.splitlines()), found.stdout
    missing = run_cli(env, "stac", "search", name, "-v", "99", "--mount", str(mnt.path))
    assert_one_line_error(missing, "version doesn't exist", f"{name} has versions 1")
    nobody = unique_name("nobody")
    assert_one_line_error(run_cli(env, "stac", "search", nobody, "--mount", str(mnt.path)), f"'{nobody}' doesn't exist")
