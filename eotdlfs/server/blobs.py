"""File bytes, content-addressed by SHA-1, and the parts of multipart uploads: the interface and the local folder.

`open_blobs` gives the store of `eotdlfs serve --blobs`: this module's `BlobStore` (a folder,
the default) or `eotdlfs.server.s3blobs.S3Blobs` (a bucket). Both stage a stream while hashing
it, then commit it under its SHA-1 just before the rows naming it commit, so nothing
half-written is ever listed.

In the folder, a blob is written to a temp file in ROOT/blobs/tmp (the same filesystem), fsynced, then
renamed under its SHA-1, so a blob under its final name is always complete. Parts of an upload live in
ROOT/uploads/<upload_id>/<part> until the upload completes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Protocol

from eotdlfs.hashing import sha1_file
from eotdlfs.parallel import in_parallel

CHUNK = 1024 * 1024
SYNC_THREADS = 16
STALE_TEMP_S = 3600
_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


class TooBig(Exception):
    """A stream went over the byte limit it was copied with."""


class Staged(Protocol):
    """Bytes received and hashed, not yet listed under their SHA-1."""

    sha1: str
    size: int

    def discard(self) -> None: ...


class RangeReader(Protocol):
    """Reads of one byte range of a blob, in order; small reads may run on the event loop when INLINE."""

    inline: bool

    def read_at(self, offset: int, n: int) -> bytes: ...

    def close(self) -> None: ...


class Blobs(Protocol):
    """Where blobs and upload parts live (see the module docstring)."""

    def stage(self, source: BinaryIO, limit: int | None = None,
              check: Callable[[int], None] | None = None) -> Staged: ...
    def sync_all(self, staged: list) -> None: ...
    def commit_all(self, staged: list) -> None: ...
    def reader(self, sha1: str, first: int, last: int) -> RangeReader: ...
    def presign(self, sha1: str, filename: str) -> str | None: ...
    def parts(self, upload_id: str) -> list[int]: ...
    def store_part(self, upload_id: str, part: int, source: BinaryIO, expected_md5: str) -> bool: ...
    def store_zero_part(self, upload_id: str, part: int, size: int) -> None: ...
    def assemble(self, upload_id: str, parts: list[int]) -> Staged: ...
    def drop_upload(self, upload_id: str) -> None: ...
    def drop_uploads_except(self, live: set[str]) -> None: ...
    def drop_stale_temp_files(self) -> None: ...
    def blob_size(self, sha1: str) -> int | None: ...
    def blob_sha1(self, sha1: str) -> str | None: ...
    def stored(self) -> Iterator[str]: ...
    def leftovers(self, live_uploads: set[str]) -> list[str]: ...


def open_blobs(root: Path, url: str | None = None) -> Blobs:
    """The blob store of `--blobs URL`: a folder (default ROOT/blobs and ROOT/uploads) or s3://BUCKET[/PREFIX]."""
    if url is None:
        return BlobStore(root)
    if url.startswith("s3://"):
        from eotdlfs.server.s3blobs import S3Blobs

        return S3Blobs(url)
    if "://" in url:
        raise ValueError(f"--blobs must be a folder or s3://BUCKET[/PREFIX], not {url!r}")
    return BlobStore(Path(url))


def check_sha1(sha1: str) -> str:
    if not _SHA1.match(sha1):  # never build a path or key from anything but a checksum
        raise ValueError(f"not a SHA-1: {sha1!r}")
    return sha1


def check_upload_id(upload_id: str) -> str:
    if not _UPLOAD_ID.match(upload_id):
        raise ValueError(f"not an upload id: {upload_id!r}")
    return upload_id


_ZEROS = bytes(CHUNK)


def _write_sparse(out: BinaryIO, chunk: bytes) -> None:
    """CHUNK written to OUT, or skipped over when it is all zeros: a sparse file stays sparse on the
    server's disk (and costs no writes), and reads the same; the caller truncates OUT at its end."""
    if chunk == (_ZEROS if len(chunk) == CHUNK else bytes(len(chunk))):
        out.seek(len(chunk), os.SEEK_CUR)
    else:
        out.write(chunk)


class Hashing:
    """A read-only stream over SOURCE that hashes what passes and enforces LIMIT and CHECK(bytes so far)."""

    def __init__(self, source: BinaryIO, limit: int | None, check: Callable[[int], None] | None):
        self.source, self.limit, self.check = source, limit, check
        self.digest, self.size = hashlib.sha1(), 0

    def read(self, n: int = CHUNK) -> bytes:
        chunk = self.source.read(CHUNK if n is None or n < 0 else n)
        if chunk:
            self.size += len(chunk)
            if self.limit is not None and self.size > self.limit:
                raise TooBig(self.size)
            if self.check is not None:
                self.check(self.size)
            self.digest.update(chunk)
        return chunk

    def close(self) -> None:
        """SOURCE belongs to the caller: it stays open."""


class StagedBlob:
    """Bytes copied to a temp file and hashed; `BlobStore.commit_all` moves them under their SHA-1."""

    def __init__(self, store: "BlobStore", path: Path, sha1: str, size: int):
        self.store, self.path, self.sha1, self.size = store, path, sha1, size

    def sync(self) -> None:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _rename(self) -> Path | None:
        """Move into place; the folder to fsync, or None when these bytes were already stored."""
        final = self.store.path_for(self.sha1)
        if final.exists():
            self.discard()
            return None
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path, final)
        return final.parent

    def discard(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class BlobStore:
    """ROOT/blobs (content) and ROOT/uploads (multipart parts)."""

    def __init__(self, root: Path):
        self.blobs = Path(root) / "blobs"
        self.tmp = self.blobs / "tmp"
        self.uploads = Path(root) / "uploads"
        for d in (self.blobs, self.tmp, self.uploads):
            d.mkdir(parents=True, exist_ok=True)

    def drop_stale_temp_files(self) -> None:
        """Remove temp files a crashed request left; old enough that no live request owns them."""
        cutoff = time.time() - STALE_TEMP_S
        for path in self.tmp.glob("stage-*"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                pass

    def path_for(self, sha1: str) -> Path:
        check_sha1(sha1)
        return self.blobs / sha1[:2] / sha1[2:]

    def reader(self, sha1: str, first: int, last: int) -> "FileRange":
        return FileRange(self.path_for(sha1))

    def presign(self, sha1: str, filename: str) -> str | None:
        return None  # a folder has no URL of its own: the replica sends the bytes

    def blob_size(self, sha1: str) -> int | None:
        try:
            return self.path_for(sha1).stat().st_size
        except FileNotFoundError:
            return None

    def blob_sha1(self, sha1: str) -> str | None:
        try:
            return sha1_file(self.path_for(sha1))
        except FileNotFoundError:
            return None

    def stored(self) -> Iterator[str]:
        """The SHA-1 of every blob stored."""
        for d in sorted(self.blobs.iterdir()):
            if d.is_dir() and d.name != "tmp":
                yield from (d.name + p.name for p in sorted(d.iterdir()))

    def leftovers(self, live_uploads: set[str]) -> list[str]:
        """What crashes left: temp files, stray entries, parts of uploads not in LIVE_UPLOADS."""
        found = [f"{p}: temp file of an unfinished write" for p in sorted(self.tmp.iterdir())]
        found += [f"{d}: not a blob folder" for d in sorted(self.blobs.iterdir()) if not d.is_dir()]
        for d in sorted(self.uploads.iterdir()):
            if d.name not in live_uploads:
                found.append(f"{d}: parts of an upload the database does not know")
            else:
                found += [f"{p}: temp file of an unfinished part" for p in sorted(d.iterdir()) if not p.name.isdigit()]
        return found

    def stage(self, source: BinaryIO, limit: int | None = None,
              check: Callable[[int], None] | None = None) -> StagedBlob:
        """Copy SOURCE to a temp file, hashing it. CHECK(bytes so far) may raise to abort.

        Not yet fsynced: `sync_all` then `commit_all` make it durable and visible.
        """
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="stage-")
        hashing = Hashing(source, limit, check)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := hashing.read(CHUNK):
                    _write_sparse(out, chunk)
                out.truncate()
        except BaseException:
            os.unlink(name)
            raise
        return StagedBlob(self, Path(name), hashing.digest.hexdigest(), hashing.size)

    def sync_all(self, staged: list[StagedBlob]) -> None:
        """fsync every staged file; concurrent fsyncs share the filesystem's journal commits."""
        in_parallel(StagedBlob.sync, staged, SYNC_THREADS)

    def commit_all(self, staged: list[StagedBlob]) -> None:
        """Rename synced blobs into place and fsync their folders: after this they survive a crash."""
        folders = {folder for folder in (b._rename() for b in staged) if folder is not None}
        in_parallel(_fsync_dir, list(folders), SYNC_THREADS)

    # -- multipart parts --------------------------------------------------

    def upload_dir(self, upload_id: str) -> Path:
        return self.uploads / check_upload_id(upload_id)

    def parts(self, upload_id: str) -> list[int]:
        """Part numbers received for UPLOAD_ID, ascending."""
        d = self.upload_dir(upload_id)
        if not d.is_dir():
            return []
        return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit())

    def store_part(self, upload_id: str, part: int, source: BinaryIO, expected_md5: str) -> bool:
        """Write one part; False (and nothing kept) when its MD5 is not EXPECTED_MD5.

        Parts are not fsynced: they are a cache of bytes the client still has. A process
        crash keeps them (page cache); a power loss may garble one, and then the SHA-1 check
        at completion refuses the file and drops the upload, so nothing wrong is ever kept.
        Skipping the fsync halves what a large upload writes to disk.
        """
        d = self.upload_dir(upload_id)
        d.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=d, prefix=".part-")
        md5 = hashlib.md5()
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(CHUNK):
                    md5.update(chunk)
                    _write_sparse(out, chunk)
                out.truncate()
            if md5.hexdigest() != expected_md5:
                os.unlink(name)
                return False
            os.replace(name, d / str(part))
        except BaseException:
            if os.path.exists(name):
                os.unlink(name)
            raise
        return True

    def store_zero_part(self, upload_id: str, part: int, size: int) -> None:
        """A part of SIZE zero bytes, kept as a hole: nothing is written."""
        d = self.upload_dir(upload_id)
        d.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=d, prefix=".part-")
        try:
            os.ftruncate(fd, size)
            os.close(fd)
            os.replace(name, d / str(part))
        except BaseException:
            if os.path.exists(name):
                os.unlink(name)
            raise

    def assemble(self, upload_id: str, parts: list[int]) -> StagedBlob:
        """Concatenate PARTS in order into a staged blob (hashed while copying)."""
        d = self.upload_dir(upload_id)
        return self.stage(Concat([lambda p=p: open(d / str(p), "rb") for p in parts]))

    def drop_upload(self, upload_id: str) -> None:
        shutil.rmtree(self.upload_dir(upload_id), ignore_errors=True)

    def drop_uploads_except(self, live: set[str]) -> None:
        """Remove every part folder whose upload is not in LIVE."""
        for folder in self.uploads.iterdir():
            if folder.name not in live:
                shutil.rmtree(folder, ignore_errors=True)


class FileRange:
    """`RangeReader` of a blob file: positioned reads, small ones cheap enough for the event loop."""

    inline = True

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_RDONLY)

    def read_at(self, offset: int, n: int) -> bytes:
        return os.pread(self.fd, n, offset)

    def close(self) -> None:
        os.close(self.fd)


class Concat:
    """A read-only stream over several streams, each opened when the one before it ends."""

    def __init__(self, openers: list[Callable[[], BinaryIO]]):
        self._openers = list(openers)
        self._f: BinaryIO | None = None

    def read(self, n: int) -> bytes:
        while True:
            if self._f is None:
                if not self._openers:
                    return b""
                self._f = self._openers.pop(0)()
            data = self._f.read(n)
            if data:
                return data
            self._f.close()
            self._f = None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
