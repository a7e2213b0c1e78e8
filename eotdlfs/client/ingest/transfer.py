"""Sending bytes: zip batches of small files (route 6) and multipart uploads of large ones (routes 10-12).

Each file's bytes are checked against the SHA-1 the plan was made with as they are read,
so a file changed during an ingest fails loudly instead of landing under a stale checksum.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Collection

from eotdlfs.client.api import ApiClient
from eotdlfs.client.errors import BadRequest, Conflict
from eotdlfs.parallel import in_parallel
from eotdlfs.parts import zeros_md5
from eotdlfs.client.ingest.plan import Upload

CHUNK_SIZE = 10 * 1024 * 1024  # the official client's part size (its limit of 10,000 parts allows 100 GB)
# Requests in flight at once: a server that fsyncs each part or blob is latency-bound, so a few
# concurrent requests keep it busy (measured: 1 part in flight 26 MB/s, 4 -> 50 MB/s, 6 -> 61 MB/s).
PARALLEL_PARTS = 4
PARALLEL_REQUESTS = 3


class ChangedDuringIngest(OSError):
    def __init__(self, path: Path):
        super().__init__(f"{path} changed while it was being ingested; run the ingest again")


def chunk_size_for(size: int) -> int:
    """Part size: 10 MiB, growing for huge files so they stay within 10,000 parts."""
    return max(CHUNK_SIZE, -(-size // 10_000))


def read_verified(path: Path, checksum: str) -> bytes:
    data = path.read_bytes()
    if hashlib.sha1(data).hexdigest() != checksum:
        raise ChangedDuringIngest(path)
    return data


def build_zip(files: list[tuple[str, Path, str]]) -> bytes:
    """A stored (uncompressed) zip of (record path, local path, checksum) in the given order."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for record_path, local, checksum in files:
            zf.writestr(zipfile.ZipInfo(record_path, date_time=(1980, 1, 1, 0, 0, 0)), read_verified(local, checksum))
    return buffer.getvalue()


def send_batch(api: ApiClient, kind: str, record_id: str, version: int, files: list[tuple[str, Path, str]]) -> None:
    api.upload_batch(kind, record_id, version, build_zip(files), [checksum for _, _, checksum in files])


def data_bytes(fd: int, start: int, end: int) -> int:
    """How many bytes of [START, END) of the file FD are data rather than holes (SEEK_DATA/SEEK_HOLE;
    all of them where the file system cannot tell)."""
    total, position = 0, start
    while position < end:
        try:
            data = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # nothing but a hole up to the end of the file
                break
            return end - start
        if data >= end:
            break
        hole = os.lseek(fd, data, os.SEEK_HOLE)
        total += min(hole, end) - data
        position = hole
    return total


def part_body(fd: int, offset: int, length: int, encodings: Collection[str]) -> tuple[bytes, str, str | None]:
    """What route 11 sends for the part of FD at OFFSET: (body, MD5 of the part's bytes, encoding).

    With the server's ENCODINGS, a part that is all hole (a sparse file) is sent as `zeros`
    (nothing but its size), one mostly made of holes `deflate`d: 3 GiB of holes cross the
    wire as a few KB. Other parts go as they are: compressing them would cost CPU for
    little (EO rasters are compressed already)."""
    data_size = data_bytes(fd, offset, offset + length) if encodings else length
    if data_size == 0 and "zeros" in encodings:
        return b"", zeros_md5(length), "zeros"
    if data_size * 2 <= length and "deflate" in encodings:
        data = os.pread(fd, length, offset)
        return zlib.compress(data, 9), hashlib.md5(data).hexdigest(), "deflate"
    data = os.pread(fd, length, offset)
    return data, hashlib.md5(data).hexdigest(), None


def send_multipart(
    api: ApiClient, kind: str, record_id: str, version: int, upload: Upload, local: Path,
    on_bytes: Callable[[int], None],
) -> int:
    """Upload one large file in parts, skipping the parts the server already holds; returns bytes sent."""
    source = upload.source
    assert source.checksum is not None
    try:
        upload_id, present = api.start_multipart(kind, record_id, source.path, source.checksum)
    except Conflict as exc:
        if "already exists" not in exc.detail:
            raise
        # "File already exists": the path's newest stored bytes are these; no need to send them
        api.carry(kind, record_id, version, [source.path], [source.checksum])
        on_bytes(source.size)
        return 0
    chunk = chunk_size_for(source.size)
    held = set(present)
    missing = [n for n in range(1, -(-source.size // chunk) + 1) if n not in held]
    on_bytes(source.size - sum(min(chunk, source.size - (n - 1) * chunk) for n in missing))
    encodings = frozenset(api.capabilities().get("part_encodings") or ())
    fd = os.open(local, os.O_RDONLY)
    try:
        def send_part(number: int) -> int:
            offset = (number - 1) * chunk
            length = min(chunk, source.size - offset)
            body, md5, encoding = part_body(fd, offset, length, encodings)
            api.upload_chunk(kind, upload_id, number, body, md5, encoding, length)
            on_bytes(length)
            return len(body)

        sent = sum(in_parallel(send_part, missing, PARALLEL_PARTS))
    finally:
        os.close(fd)
    try:
        api.complete_multipart(kind, upload_id, version, source.size)
    except BadRequest as exc:
        # the parts the server assembled are not the bytes hashed: the file changed meanwhile (the server
        # said only "Checksum mismatch.", naming no file); small files are checked as they are read
        if "checksum mismatch" in exc.detail.lower():
            raise ChangedDuringIngest(local) from exc
        raise
    return sent
