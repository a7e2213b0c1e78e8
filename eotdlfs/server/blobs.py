"""File bytes on disk, content-addressed by SHA-1, and the parts of multipart uploads.

A blob is written to a temp file in ROOT/blobs/tmp (the same filesystem), fsynced, then
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
from typing import BinaryIO, Callable

from eotdlfs.parallel import in_parallel

CHUNK = 1024 * 1024
SYNC_THREADS = 16
STALE_TEMP_S = 3600
_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


class TooBig(Exception):
    """A stream went over the byte limit it was copied with."""


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
        if not _SHA1.match(sha1):  # never build a path from anything but a checksum
            raise ValueError(f"not a SHA-1: {sha1!r}")
        return self.blobs / sha1[:2] / sha1[2:]

    def stage(self, source: BinaryIO, limit: int | None = None,
              check: Callable[[int], None] | None = None) -> StagedBlob:
        """Copy SOURCE to a temp file, hashing it. CHECK(bytes so far) may raise to abort.

        Not yet fsynced: `sync_all` then `commit_all` make it durable and visible.
        """
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="stage-")
        sha1, size = hashlib.sha1(), 0
        try:
            with os.fdopen(fd, "wb") as out:
                while True:
                    chunk = source.read(CHUNK)
                    if not chunk:
                        break
                    size += len(chunk)
                    if limit is not None and size > limit:
                        raise TooBig(size)
                    if check is not None:
                        check(size)
                    sha1.update(chunk)
                    out.write(chunk)
        except BaseException:
            os.unlink(name)
            raise
        return StagedBlob(self, Path(name), sha1.hexdigest(), size)

    def sync_all(self, staged: list[StagedBlob]) -> None:
        """fsync every staged file; concurrent fsyncs share the filesystem's journal commits."""
        in_parallel(StagedBlob.sync, staged, SYNC_THREADS)

    def commit_all(self, staged: list[StagedBlob]) -> None:
        """Rename synced blobs into place and fsync their folders: after this they survive a crash."""
        folders = {folder for folder in (b._rename() for b in staged) if folder is not None}
        in_parallel(_fsync_dir, list(folders), SYNC_THREADS)

    # -- multipart parts --------------------------------------------------

    def upload_dir(self, upload_id: str) -> Path:
        if not _UPLOAD_ID.match(upload_id):
            raise ValueError(f"not an upload id: {upload_id!r}")
        return self.uploads / upload_id

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
                    out.write(chunk)
            if md5.hexdigest() != expected_md5:
                os.unlink(name)
                return False
            os.replace(name, d / str(part))
        except BaseException:
            if os.path.exists(name):
                os.unlink(name)
            raise
        return True

    def assemble(self, upload_id: str, parts: list[int]) -> StagedBlob:
        """Concatenate PARTS in order into a staged blob (hashed while copying)."""
        d = self.upload_dir(upload_id)
        return self.stage(_Concat([d / str(p) for p in parts]))

    def drop_upload(self, upload_id: str) -> None:
        shutil.rmtree(self.upload_dir(upload_id), ignore_errors=True)

    def drop_uploads_except(self, live: set[str]) -> None:
        """Remove every part folder whose upload is not in LIVE."""
        for folder in self.uploads.iterdir():
            if folder.name not in live:
                shutil.rmtree(folder, ignore_errors=True)


class _Concat:
    """A read-only stream over several files, one after the other."""

    def __init__(self, paths: list[Path]):
        self._paths = list(paths)
        self._f: BinaryIO | None = None

    def read(self, n: int) -> bytes:
        while True:
            if self._f is None:
                if not self._paths:
                    return b""
                self._f = open(self._paths.pop(0), "rb")
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
