"""A repository file as a Python file object: seekable, read lazily through the mount's read path.

`RemoteFile` is what `Connection.open` and `eotdl://` hand out: a buffered binary reader whose
reads are `ContentReader.read_into` calls on one `OpenFile`, so they get the mount's read-ahead
for sequential readers, small pieces for seeking ones (a COG reader, a 1 MiB read at an offset),
the block cache, and the SHA-1 and CRC32C checks. A read larger than the buffer goes to the
reader in one call. Failures come out as OSError with the mount's errno (`fs/errors.py`).
"""

from __future__ import annotations

import io
import os

from eotdlfs.fs.content import Content
from eotdlfs.fs.errors import errno_for
from eotdlfs.fs.reader import ContentReader
from eotdlfs.repository import ContentMismatch, FileEntry, Record, RepositoryError

BUFFER_SIZE = 64 << 10  # a seeking reader's piece (fs/pieces.py): a small read costs no more than it would


class _RawRemote(io.RawIOBase):
    """The unbuffered file: position and size here, bytes from the reader."""

    def __init__(self, reader: ContentReader, content: Content, path: str):
        super().__init__()
        self._reader = reader
        self._handle = reader.open(content)
        self.size = content.size
        self.name = path
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        with memoryview(buffer) as view:
            try:
                count = self._reader.read_into(self._handle, view.cast("B"), self._pos)
            except (ContentMismatch, RepositoryError) as exc:
                raise OSError(errno_for(exc), f"{self.name}: {exc}") from exc
        self._pos += count
        return count

    def readall(self) -> bytes:
        rest = bytearray(max(0, self.size - self._pos))
        count = self.readinto(rest)
        return bytes(rest[:count])

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise OSError(22, f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if not self.closed:
            self._handle.close()
        super().close()


class RemoteFile(io.BufferedReader):
    """A repository file open for reading (binary, seekable); `size` and `path` as fsspec's files have."""

    @property
    def size(self) -> int:
        return self.raw.size

    @property
    def path(self) -> str:
        return self.raw.name


def open_remote(reader: ContentReader, record: Record, entry: FileEntry, path: str) -> RemoteFile:
    return RemoteFile(_RawRemote(reader, Content(record, entry), path), BUFFER_SIZE)
