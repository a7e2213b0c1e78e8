"""Our extension `contents`: the whole bytes of many small files of a record in one answer.

A mount walking a STAC catalog reads thousands of documents of a few KiB; one range
request each costs a round trip and more CPU than the bytes. `POST KIND/ID/contents` with
`{"files": [[PATH, FILE_VERSION], ...]}` answers their bytes one after another, in the
order asked; the caller knows each size and SHA-1 from the listing (route 5) and checks
each file. Bounded in files and in bytes, so one answer is never a large download.
"""

from __future__ import annotations

from typing import Any

from eotdlfs.server.errors import ApiError, bad_request
from eotdlfs.server.auth import Reader
from eotdlfs.server.store import Store

MAX_FILES = 1000
MAX_BYTES = 16 << 20


def requested_files(body: Any) -> list[tuple[str, int]]:
    """(path, file version) pairs of BODY, or a 400 naming what is wrong."""
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(files, list) or not files:
        raise bad_request('The body must be {"files": [[path, file_version], ...]} with at least one file')
    if len(files) > MAX_FILES:
        raise ApiError(413, f"At most {MAX_FILES} files per request")
    pairs = []
    for item in files:
        if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str)
                or type(item[1]) is not int):
            raise bad_request(f"files: {item!r:.200} is not [path, file_version]")
        pairs.append((item[0], item[1]))
    return pairs


def file_contents(store: Store, kind: str, record_id: str, body: Any, reader: Reader) -> bytes:
    """The bytes of the files BODY names, one after another (404 for one the record lacks, or that only
    a draft READER does not own holds)."""
    blobs = [store.find_download(kind, record_id, path, version, reader) for path, version in requested_files(body)]
    if sum(blob.size for blob in blobs) > MAX_BYTES:
        raise ApiError(413, f"The files total more than {MAX_BYTES} bytes; ask for fewer at a time")
    return b"".join(store.blob_bytes(blob.checksum, blob.size) for blob in blobs)
