"""Routes 5-8: listing files, zip batches, carrying files, single files; file versioning rules."""

from __future__ import annotations

from serverapi import sha1


def _ids(files: list[dict]) -> dict[str, int]:
    return {f["filename"]: f["version"] for f in files}


def test_file_versions_follow_checksums(api, unique_name):
    rid = api.create(unique_name("fv"))
    api.new_version(rid)
    assert api.batch(rid, 1, {"a": b"1", "b": b"same"}).status_code == 200
    api.new_version(rid)
    # a changed file gets file version 2, an unchanged one keeps file version 1
    assert api.batch(rid, 2, {"a": b"2", "b": b"same"}).status_code == 200
    assert _ids(api.files(rid, 1)) == {"a": 1, "b": 1}
    assert _ids(api.files(rid, 2)) == {"a": 2, "b": 1}
    everything = api.files(rid)  # no version: every file version of every path
    assert sorted((f["filename"], f["version"]) for f in everything) == [("a", 1), ("a", 2), ("b", 1)]
    assert api.download(rid, "a", 1).content == b"1"
    assert api.download(rid, "a", 2).content == b"2"
    assert api.download(rid, "a").content == b"2"  # latest file version


def test_a_file_version_keeps_its_creation_time_in_every_version(api, unique_name):
    rid = api.create(unique_name("fvt"))
    api.new_version(rid)
    api.batch(rid, 1, {"a": b"1", "b": b"same"})
    api.new_version(rid)
    api.batch(rid, 2, {"a": b"2"})
    assert api.carry(rid, 2, {"b": sha1(b"same")}).status_code == 200
    v1, v2 = ({f["filename"]: f["createdAt"] for f in api.dated_files(rid, n)} for n in (1, 2))
    assert v2["b"] == v1["b"] and v2["a"] > v1["a"]


def test_reingest_into_same_version_replaces_path(api, unique_name):
    rid = api.create(unique_name("rep"))
    api.new_version(rid)
    api.batch(rid, 1, {"a": b"old"})
    api.batch(rid, 1, {"a": b"new"})
    assert api.files(rid, 1) == [{"filename": "a", "version": 2, "checksum": sha1(b"new"), "size": 3}]


def test_carry_files_into_new_version(api, unique_name):
    name = unique_name("carry")
    rid = api.create(name)
    api.new_version(rid)
    api.batch(rid, 1, {"keep": b"k" * 10, "drop": b"d"})
    api.new_version(rid)
    r = api.carry(rid, 2, {"keep": sha1(b"k" * 10)})
    assert r.status_code == 200, r.text
    assert r.json()["filenames"] == ["keep"] and r.json()[f"{api.noun}_name"] == name
    assert _ids(api.files(rid, 2)) == {"keep": 1}  # a file left out of a version is deleted in it
    sizes = {v["version_id"]: v["size"] for v in api.record(name)["versions"]}
    assert sizes == {1: 11, 2: 10}


def test_carry_an_older_file_version(api, unique_name):
    rid = api.create(unique_name("old"))
    api.new_version(rid)
    api.batch(rid, 1, {"a": b"v1"})
    api.new_version(rid)
    api.batch(rid, 2, {"a": b"v2"})
    api.new_version(rid)
    assert api.carry(rid, 3, {"a": sha1(b"v1")}).status_code == 200  # changed back to older bytes
    assert _ids(api.files(rid, 3)) == {"a": 1}


def test_carry_any_path_takes_the_records_known_bytes_under_a_new_path(api, unique_name):
    """Our extension: a rename or a copy sends no bytes; without `any_path` route 7 stays the official one."""
    rid = api.create(unique_name("anypath"))
    api.new_version(rid)
    api.batch(rid, 1, {"a": b"x" * 7})
    api.new_version(rid)
    moved = {"a": sha1(b"x" * 7), "b/moved": sha1(b"x" * 7)}
    r = api.carry(rid, 2, moved)
    assert (r.status_code, r.json()) == (404, {"detail": "File doesn't exist"})
    r = api.post(f"{api.kind}/{rid}/files?version=2&any_path=true",
                 data={"filenames": list(moved), "checksums": list(moved.values())})
    assert r.status_code == 200, r.text
    assert {f["filename"]: (f["version"], f["checksum"], f["size"]) for f in api.files(rid, 2)} == {
        "a": (1, sha1(b"x" * 7), 7), "b/moved": (1, sha1(b"x" * 7), 7)}
    r = api.post(f"{api.kind}/{rid}/files?version=2&any_path=true",
                 data={"filenames": ["c"], "checksums": [sha1(b"never sent")]})
    assert (r.status_code, r.json()) == (404, {"detail": "File doesn't exist"})


def test_carry_errors_store_nothing(api, unique_name):
    rid = api.create(unique_name("carerr"))
    api.new_version(rid)
    api.batch(rid, 1, {"a": b"x"})
    api.new_version(rid)
    r = api.carry(rid, 2, {"a": sha1(b"x"), "ghost": sha1(b"g")})
    assert (r.status_code, r.json()) == (404, {"detail": "File doesn't exist"})
    r = api.carry(rid, 2, {"a": sha1(b"other")})
    assert (r.status_code, r.json()) == (400, {"detail": "Checksum mismatch."})
    assert api.files(rid, 2) == []  # all or nothing
    r = api.post(f"{api.kind}/{rid}/files?version=2", data={"filenames": ["a", "b"], "checksums": [sha1(b"x")]})
    assert r.status_code == 400
    r = api.carry(rid, 9, {"a": sha1(b"x")})
    assert (r.status_code, r.json()) == (404, {"detail": f"{api.noun.capitalize()} version doesn't exist"})


def test_single_file_route(api, unique_name):
    name = unique_name("one")
    rid = api.create(name)
    api.new_version(rid)
    r = api.post(f"{api.kind}/{rid}?version=1", files={"file": ("dir/one.txt", b"one")},
                 data={"checksum": sha1(b"one")})
    assert r.status_code == 200, r.text
    assert r.json() == {f"{api.noun}_id": rid, f"{api.noun}_name": name, "filename": "dir/one.txt"}
    assert api.files(rid, 1) == [{"filename": "dir/one.txt", "version": 1, "checksum": sha1(b"one"), "size": 3}]
    assert api.download(rid, "dir/one.txt").content == b"one"


def test_single_file_errors_store_nothing(api, unique_name):
    rid = api.create(unique_name("oneerr"))
    api.new_version(rid)
    r = api.post(f"{api.kind}/{rid}?version=1", files={"file": ("f", b"one")}, data={"checksum": sha1(b"two")})
    assert (r.status_code, r.json()) == (400, {"detail": "Checksum mismatch."})
    r = api.post(f"{api.kind}/{rid}?version=5", files={"file": ("f", b"one")}, data={"checksum": sha1(b"one")})
    assert (r.status_code, r.json()) == (404, {"detail": f"{api.noun.capitalize()} version doesn't exist"})
    r = api.post(f"{api.kind}/{rid}", files={"file": ("f", b"one")}, data={"checksum": sha1(b"one")})
    assert r.status_code == 404  # no version given: like the official server, no such version
    r = api.post(f"{api.kind}/{rid}?version=1", files={"file": ("f", b"one")}, data={"checksum": "xyz"})
    assert r.status_code == 400
    assert api.files(rid) == []


def test_batch_to_missing_record_or_version(api, unique_name):
    r = api.batch("0123456789abcdef01234567", 1, {"a": b"x"})
    assert (r.status_code, r.json()) == (404, {"detail": f"{api.noun.capitalize()} doesn't exist"})
    rid = api.create(unique_name("nov"))
    r = api.batch(rid, 1, {"a": b"x"})
    assert (r.status_code, r.json()) == (404, {"detail": f"{api.noun.capitalize()} version doesn't exist"})


def test_files_of_missing_record_or_version(api, unique_name):
    r = api.get(f"{api.kind}/0123456789abcdef01234567/files")
    assert (r.status_code, r.json()) == (404, {"detail": f"{api.noun.capitalize()} doesn't exist"})
    rid = api.create(unique_name("nofiles"))
    assert api.files(rid) == []
    r = api.get(f"{api.kind}/{rid}/files?version=3")
    assert (r.status_code, r.json()) == (404, {"detail": f"{api.noun.capitalize()} version doesn't exist"})


def test_form_field_cap_is_advertised_and_enforced(api, unique_name):
    import requests

    cap = requests.get(api.url + "eotdlfs/capabilities").json()["max_form_fields"]
    rid = api.create(unique_name("fields"))
    api.new_version(rid)
    per_request = (cap - 10) // 2
    files = {f"f{i}": str(i).encode() for i in range(per_request)}
    assert api.batch(rid, 1, files).status_code == 200
    api.new_version(rid)
    assert api.carry(rid, 2, {p: sha1(d) for p, d in files.items()}).status_code == 200
    assert len(api.files(rid, 2)) == per_request
    api.new_version(rid)
    too_many = {f"f{i}": sha1(str(i).encode()) for i in range(cap // 2 + 1)}
    r = api.carry(rid, 3, too_many)
    assert r.status_code == 400 and isinstance(r.json()["detail"], str)
    assert api.files(rid, 3) == []


def test_a_path_cannot_be_file_and_folder_in_one_version(api, unique_name):
    rid = api.create(unique_name("clash"))
    api.new_version(rid)
    assert api.batch(rid, 1, {"a/b/c": b"1", "a-b": b"2", "a0": b"3"}).status_code == 200
    for files in ({"a": b"x"}, {"a/b": b"x"}, {"a/b/c/d": b"x"}, {"ok": b"x", "a/b/c/d/e": b"x"}):
        r = api.batch(rid, 1, files)
        assert r.status_code == 409, (files, r.text)
        assert "both a file and a folder" in r.json()["detail"]
    r = api.batch(rid, 1, {"z": b"1", "z/y": b"2"})  # a clash inside one batch
    assert r.status_code == 409
    assert sorted(f["filename"] for f in api.files(rid, 1)) == ["a-b", "a/b/c", "a0"]
    # in another version the same names are fine
    api.new_version(rid)
    assert api.batch(rid, 2, {"a/b": b"file now"}).status_code == 200
    r = api.carry(rid, 2, {"a/b/c": sha1(b"1")})
    assert r.status_code == 409


def test_refused_batch_leaves_no_blob(api, unique_name, repo_server):
    rid = api.create(unique_name("noblob"))
    api.new_version(rid)
    api.batch(rid, 1, {"p": b"1"})
    unique = f"bytes only this test sends {rid}".encode()
    r = api.batch(rid, 1, {"q": unique, "p/x": b"2"})
    assert r.status_code == 409
    digest = sha1(unique)
    assert repo_server.blob_store().blob_size(digest) is None


def test_files_filtered_by_path_answer_one_entry(api, unique_name):
    """Ours, for a mount's first open: a file, a folder (one entry under it) or nothing, in one small answer."""
    rid = api.create(unique_name("lookup"))
    api.new_version(rid)
    api.batch(rid, 1, {"top": b"t", "d/x": b"1", "d/y": b"22", "d/e/z": b"3", "d0": b"4"})
    api.new_version(rid)
    api.batch(rid, 2, {"d/x": b"changed"})

    def at(path: str, version: int | None = 1) -> list[tuple[str, int]]:
        r = api.get(f"{api.kind}/{rid}/files", params={"path": path, **({"version": version} if version else {})})
        assert r.status_code == 200, r.text
        return [(f["filename"], f["version"]) for f in r.json()]

    assert at("top") == [("top", 1)]
    assert at("d") == [("d/e/z", 1)]  # a folder: its first entry only
    assert at("d/e") == [("d/e/z", 1)]
    assert at("d/x", 2) == [("d/x", 2)]
    assert at("d/x", None) == [("d/x", 1), ("d/x", 2)]  # no version: every file version at the path
    assert at("nothing") == [] and at("d/") == [] and at("t") == [] and at("nul\x00") == []
    assert len(api.files(rid, 1)) == 5  # without a path: the whole list, as before
