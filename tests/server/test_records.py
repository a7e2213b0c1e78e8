"""Routes 1-4 and the record JSON: list, get by name, create, new version; their errors."""

from __future__ import annotations

import pytest

META = {"authors": ["Ada"], "source": "http://example.com", "license": "MIT"}


def test_get_by_name_and_missing(api, unique_name):
    name = unique_name("rec")
    rid = api.create(name, description="about it")
    record = api.record(name)
    assert record["id"] == rid and record["name"] == name and record["uid"] == "alice"
    assert record["authors"] == ["Ada"] and record["license"] == "MIT" and record["source"] == "http://example.com"
    assert record["versions"] == [] and record["drafts"] == [] and record["quality"] == 0
    assert record["description"] == "about it"
    for key in ("files", "createdAt", "updatedAt", "likes", "downloads", "tags"):
        assert key in record
    r = api.get(f"{api.kind}?name=Nope-{name}")
    assert r.status_code == 404
    assert r.json() == {"detail": f"{api.noun.capitalize()} doesn't exist"}


def test_list_match_and_limit(api, unique_name):
    prefix = unique_name("lst")
    names = [f"{prefix}-Alpha", f"{prefix}-beta", f"{prefix}-gamma"]
    for n in names:
        api.create(n)
    r = api.get(f"{api.kind}?match={prefix.upper()}")  # case-insensitive substring
    assert r.status_code == 200
    assert sorted(x["name"] for x in r.json()) == sorted(names)
    assert [x["name"] for x in api.get(f"{api.kind}?match={prefix}-BET").json()] == [f"{prefix}-beta"]
    assert len(api.get(f"{api.kind}?match={prefix}&limit=2").json()) == 2
    assert len(api.get(f"{api.kind}?limit=1").json()) == 1
    everything = api.get(api.kind).json()
    assert set(names) <= {x["name"] for x in everything}


def test_kinds_are_separate(api, unique_name):
    name = unique_name("sep")
    rid = api.create(name)
    other = api.of_kind("models" if api.kind == "datasets" else "datasets")
    assert other.get(f"{other.kind}?name={name}").status_code == 404
    assert other.get(f"{other.kind}/{rid}/files").status_code == 404
    other.create(name)  # same name in the other kind is fine


def test_create_twice_is_409(api, unique_name):
    name = unique_name("dup")
    api.create(name)
    r = api.post(api.kind, json={"name": name, **META})
    assert r.status_code == 409
    assert r.json() == {"detail": f"{api.noun.capitalize()} already exists"}


@pytest.mark.parametrize("name", ["ab", "a" * 46, "1abc", "-abc", "ab_c", "ab c", "abc/d", "ab.c", "", "ábc",
                                  "abcd\n"])  # a final newline: a record "abcd\n" was made
def test_create_bad_name_is_400_and_stores_nothing(api, name):
    r = api.post(api.kind, json={"name": name, **META})
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith("name")
    assert api.get(f"{api.kind}?name={name}").status_code in (404, 422)


@pytest.mark.parametrize("field", ["name", "authors", "license", "source"])
def test_create_missing_field_is_400(api, unique_name, field):
    body = {"name": unique_name("miss"), **META}
    del body[field]
    r = api.post(api.kind, json=body)
    assert r.status_code == 400
    assert r.json()["detail"] == f"{field}: is required"


def test_create_source_must_be_http(api, unique_name):
    name = unique_name("src")
    r = api.post(api.kind, json={**META, "name": name, "source": "ftp://example.com"})
    assert r.status_code == 400
    assert "source" in r.json()["detail"]
    assert api.get(f"{api.kind}?name={name}").status_code == 404


@pytest.mark.parametrize("body", ["not json", "[1, 2]", "null"])
def test_create_body_not_a_mapping(api, body):
    r = api.post(api.kind, data=body, headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 422)
    assert isinstance(r.json()["detail"], str)


def test_new_versions_count_up(api, unique_name):
    name = unique_name("ver")
    rid = api.create(name)
    assert [api.new_version(rid) for _ in range(3)] == [1, 2, 3]
    r = api.post(f"{api.kind}/version/{rid}")
    assert r.json() == {f"{api.noun}_id": rid, "version": 4}
    assert [v["version_id"] for v in api.record(name)["versions"]] == [1, 2, 3, 4]
    assert all(v["size"] == 0 for v in api.record(name)["versions"])


def test_new_version_of_missing_record_is_404(api):
    r = api.post(f"{api.kind}/version/0123456789abcdef01234567")
    assert r.status_code == 404
    assert r.json() == {"detail": f"{api.noun.capitalize()} doesn't exist"}


def test_validation_errors_are_one_string(api, unique_name):
    rid = api.create(unique_name("val"))
    r = api.get(f"{api.kind}/{rid}/files?version=abc")
    assert r.status_code == 422
    assert isinstance(r.json()["detail"], str) and "version" in r.json()["detail"]


def test_unknown_route_is_json_404(api):
    r = api.get("no/such/route")
    assert r.status_code == 404 and "detail" in r.json()


def test_capabilities_and_stats(repo_server):
    import requests

    assert requests.get(repo_server.url + "eotdlfs/capabilities").json() == {
        "size": True, "range": True, "drafts": True, "max_form_fields": 1000, "carry_any_path": True,
        "part_encodings": ["deflate", "zeros"], "contents": {"max_files": 1000, "max_bytes": 16 << 20}}
    stats = repo_server.stats()
    assert set(stats) == {"bytes_sent", "downloads", "uploads", "contents"}
    assert set(stats["uploads"]) == {"batch", "file", "chunk", "complete", "carry"}


def test_the_owner_edits_a_records_fields_with_the_official_put(api, unique_name):
    name = unique_name("edit")
    rid = api.create(name, description="first")
    r = api.req("PUT", f"{api.kind}/{rid}", json={"license": "CC-BY-4.0", "authors": ["Ada", "Bob"], "name": name})
    assert r.status_code == 200, r.text
    assert r.json()["license"] == "CC-BY-4.0" and r.json()["id"] == rid
    record = api.record(name)
    assert (record["license"], record["authors"], record["source"], record["description"]) == \
        ("CC-BY-4.0", ["Ada", "Bob"], "http://example.com", "first")  # fields not given are kept


@pytest.mark.parametrize("body, status, says", [
    ({"source": "ftp://x"}, 400, "source: must be a URL starting with http"),
    ({"authors": [""]}, 400, "authors: must be a list of names"),
    ({"name": "another-name"}, 400, "cannot be renamed"),
    (["license"], 400, "must be a JSON object"),
])
def test_a_bad_edit_of_a_record_changes_nothing(api, unique_name, body, status, says):
    name = unique_name("badedit")
    rid = api.create(name)
    r = api.req("PUT", f"{api.kind}/{rid}", json=body)
    assert r.status_code == status and says in r.json()["detail"], r.text
    record = api.record(name)
    assert (record["license"], record["authors"], record["source"]) == ("MIT", ["Ada"], "http://example.com")


def test_only_the_owner_edits_a_record(api, unique_name):
    name = unique_name("notyours")
    rid = api.create(name)
    assert api.as_user("bob").req("PUT", f"{api.kind}/{rid}", json={"license": "stolen"}).status_code == 403
    assert api.as_user(None).req("PUT", f"{api.kind}/{rid}", json={"license": "stolen"}).status_code == 401
    assert api.req("PUT", f"{api.kind}/nope", json={"license": "x"}).status_code == 404
    assert api.record(name)["license"] == "MIT"
