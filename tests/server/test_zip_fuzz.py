"""Random and damaged zip batches never make the server fail (no 5xx), and what it accepts is exact."""

from __future__ import annotations

import io
import zipfile
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serverapi import Api, sha1

NAME_CHARS = st.sampled_from(list("ab/.\\ \x00\x01é\u202e:*?") + ["..", "//"])
NAMES = st.lists(NAME_CHARS, min_size=0, max_size=8).map("".join)
ENTRY = st.tuples(NAMES, st.binary(max_size=300), st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED,
                                                                  zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]),
                  st.sampled_from([0, 0o100644 << 16, 0o120777 << 16, 0o040755 << 16, 0x10]))
SETTINGS = settings(max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def _zip(entries) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data, compression, attr in entries:
            info = zipfile.ZipInfo(name or "x")
            info.filename = name  # also an empty name
            info.compress_type = compression
            info.external_attr = attr
            zf.writestr(info, data)
    return buf.getvalue()


def _record(repo_server, unique_name) -> tuple[Api, str]:
    api = Api(repo_server, "datasets", repo_server.token("fuzzer"))
    rid = api.create(unique_name("fuzz"))
    api.new_version(rid)
    return api, rid


def _check(api: Api, rid: str, raw: bytes, checksums: list[str], expected: dict[str, bytes] | None) -> None:
    r = api.post(f"datasets/{rid}/batch?version=1", files={"batch": ("b.zip", raw)}, data={"checksums": checksums})
    assert r.status_code < 500, r.text
    assert isinstance(r.json()["detail" if r.status_code != 200 else "filenames"], (str, list))
    listing = {f["filename"]: f for f in api.files(rid, 1)}
    if r.status_code == 200:
        assert expected is not None
        for name, data in expected.items():
            assert listing[name]["checksum"] == sha1(data)
            assert api.download(rid, quote(name)).content == data


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_random_zips(repo_server, unique_name):
    api, rid = _record(repo_server, unique_name)

    @SETTINGS
    @given(st.lists(ENTRY, min_size=1, max_size=4))
    def run(entries):
        raw = _zip(entries)
        _check(api, rid, raw, [sha1(d) for _, d, _, _ in entries], {n: d for n, d, _, _ in entries})

    run()


def test_damaged_zips(repo_server, unique_name):
    api, rid = _record(repo_server, unique_name)
    files = {"a.txt": b"alpha" * 50, "d/b.bin": bytes(range(256))}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    good = buf.getvalue()

    @SETTINGS
    @given(st.lists(st.tuples(st.integers(0, len(good) - 1), st.integers(0, 255)), min_size=1, max_size=6),
           st.integers(0, len(good)))
    def run(flips, cut):
        raw = bytearray(good)
        for at, value in flips:
            raw[at] = value
        raw = bytes(raw[:cut]) if cut < len(raw) // 2 else bytes(raw)
        _check(api, rid, raw, [sha1(d) for d in files.values()], files)

    run()
