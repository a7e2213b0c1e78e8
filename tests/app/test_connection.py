"""The Python API, `eotdlfs.connect`, against a real server: the calls the CLI's commands make too."""

from __future__ import annotations

import hashlib

import pytest

import eotdlfs
from eotdlfs.repository import NotFound, NothingToIngest
from tests.fs.datasets import make_folder, tree_digest


@pytest.fixture
def repo(repo_server, tmp_path):
    with eotdlfs.connect(api_url=repo_server.url, token=repo_server.token("alice"),
                         cache_dir=tmp_path / "cache") as connection:
        yield connection


def test_list_versions_ingest_get_open(repo, repo_server, unique_name, tmp_path):
    name = unique_name("api")
    folder = make_folder(tmp_path / "src", name)
    assert repo.ingest(folder).version == 1
    (folder / "labels.csv").write_text("id,label\n7,a\n")
    result = repo.ingest(folder)
    assert (result.version, result.uploaded) == (2, 1)
    with pytest.raises(NothingToIngest):
        repo.ingest(folder)
    assert [r.name for r in repo.list(match=name)] == [name]
    assert [v.number for v in repo.versions(name)] == [1, 2]
    got = repo.get(name, 2, tmp_path / "out")
    assert got.folder == tmp_path / "out" / name / "v2" and tree_digest(got.folder) == tree_digest(folder)
    with repo.open(f"datasets/{name}/latest/images/2023/big.bin") as f:
        f.seek(1 << 20)
        assert f.read(10) == (folder / "images/2023/big.bin").read_bytes()[1 << 20:(1 << 20) + 10]
    with repo.open(f"datasets/{name}/v2/labels.csv") as f:
        assert hashlib.sha1(f.read()).hexdigest() == hashlib.sha1(b"id,label\n7,a\n").hexdigest()


def test_unknown_names_and_folders(repo, unique_name):
    with pytest.raises(NotFound):
        repo.versions(unique_name("none"))
    for path in (f"datasets/{unique_name('none')}/v1/a.bin", f"datasets/{unique_name('none')}/latest/a.bin",
                 "nonsense/x/latest/a.bin"):
        with pytest.raises(FileNotFoundError):
            repo.open(path)
    with pytest.raises(IsADirectoryError):
        repo.open("datasets")
    with pytest.raises(ValueError):
        repo.list("nonsense")


def test_open_takes_the_eotdl_url_of_a_file(repo, unique_name, tmp_path):
    """An asset href a pystac walk over eotdl:// hands out opens as its path does (it was
    FileNotFoundError '/eotdl:/datasets/...')."""
    name = unique_name("api-url")
    folder = make_folder(tmp_path / "src", name)
    repo.ingest(folder)
    with repo.open(f"eotdl://datasets/{name}/latest/name with spaces.txt") as f:
        assert f.read() == (folder / "name with spaces.txt").read_bytes()


def test_get_takes_the_version_as_a_number_a_digit_string_or_vn(repo, unique_name, tmp_path):
    """`get(name, "1")` said "version doesn't exist: NAME has versions 1"."""
    name = unique_name("api-version")
    folder = make_folder(tmp_path / "src", name)
    repo.ingest(folder)
    for version in ("1", "v1", 1):
        got = repo.get(name, version, tmp_path / "out")
        assert got.folder == tmp_path / "out" / name / "v1" and tree_digest(got.folder) == tree_digest(folder)
    for wrong in (1.5, True, "latest", "one", [1]):
        with pytest.raises(TypeError, match="version: a whole number such as 2 or '2'"):
            repo.get(name, wrong, tmp_path / "out")


def test_a_cache_dir_that_cannot_be_made_falls_back_to_one_of_the_connection(repo_server, unique_name, tmp_path,
                                                                              caplog):
    """A read-only home (a container's, a notebook's: where eotdl:// is for) made every read raise the
    OSError of making ~/.cache/eotdlfs; here a file where a folder should be stands for it."""
    name = unique_name("nocache")
    folder = make_folder(tmp_path / "src", name)
    (tmp_path / "a-file").write_text("not a folder")
    with eotdlfs.connect(api_url=repo_server.url, token=repo_server.token("alice"),
                         cache_dir=tmp_path / "a-file" / "cache") as connection:
        connection.ingest(folder)
        with connection.open(f"datasets/{name}/v1/labels.csv") as f:
            assert f.read() == (folder / "labels.csv").read_bytes()
        scratch = connection.cache_dir
        assert scratch.is_dir() and f"cannot use the cache dir {tmp_path / 'a-file' / 'cache'}" in caplog.text
    assert not scratch.exists()
