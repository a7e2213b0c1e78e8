"""A repository file as a Python file object: seekable, read lazily through the mount's read path.

`RemoteFile` is what `Connection.open` and `eotdl://` hand out: a binary reader whose reads
are `ContentReader.read_into` calls on one `OpenFile` (a multi-range read one `read_ranges` call),
so they get the mount's read-ahead
for sequential readers, small pieces for seeking ones (a COG reader, a 1 MiB read at an offset),
the block cache, and the SHA-1 and CRC32C checks. Failures come out as OSError with the mount's errno (`fs/errors.py`).
"""

from __future__ import annotations

import errno
import io
import os
import sys
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from eotdlfs.fs.content import Content
from eotdlfs.fs.errors import errno_for
from eotdlfs.fs.reader import ContentReader
from eotdlfs.repository import ContentMismatch, FileEntry, Record, RepositoryError

BUFFER_SIZE = 64 << 10  # a seeking reader's piece (fs/pieces.py): a small read costs no more than it would
KEPT_RANGE_BUFFERS = 8  # a multi-range read's buffers kept for the next one (a window's tile rows)


class RemoteFile(io.RawIOBase):
    """A repository file open for reading: binary, seekable, `size` and `path` as fsspec's files have.

    Reads of BUFFER_SIZE or more go to the reader in one call, as asked: a COG reader's tile
    read must stay one range request (io.BufferedReader would cut it into its whole-buffer
    part and a buffered tail, a second request reaching into the next tile). Smaller reads
    (headers, `readline`) are served from one buffered chunk.

    Opened through `eotdl://`, it is that filesystem's file (`fs`, as fsspec's files have it) and
    pickles as it, reopened at its position: Dask sends an open file to its workers (xarray's
    `open_dataset(fs.open(...), chunks=...)`). Under fsspec's `blockcache::` its reads go through
    the `cache` that layer gives it, which fetches its blocks with `_fetch_range`."""

    mode = "rb"
    blocksize = BUFFER_SIZE  # blockcache::'s block size
    fs: Any = None  # the eotdl:// filesystem that opened it, if one did
    version_path = ""  # its path there with `latest` replaced by the version: what a copy reopens
    cache: Any = None  # set by fsspec's blockcache:: only

    def __init__(self, reader: ContentReader, content: Content, path: str):
        super().__init__()
        self._reader = reader
        self._handle = reader.open(content)
        self.size = content.size
        self.path = self.name = path
        self._pos = 0
        self._chunk, self._chunk_at = b"", 0  # the last small read's chunk and where it starts
        self._pid = os.getpid()
        self._forked: RemoteFile | None = None  # this file reopened in a forked process (`_here`)
        self._buffers_lock = threading.Lock()
        self._range_buffers: list[bytearray] = []  # the last multi-range reads', for the next (`_buffers`)

    @property
    def closed(self) -> bool:
        return io.RawIOBase.closed.__get__(self)

    @closed.setter
    def closed(self, value: bool) -> None:
        """blockcache:: sets it after closing the file: it is closed already."""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        with memoryview(buffer) as view:
            target = view.cast("B")
            if len(target) >= BUFFER_SIZE:
                count = self._read_into(target, self._pos)
            else:
                chunk = self.peek(len(target))[:len(target)]
                count = len(chunk)
                target[:count] = chunk
        self._pos += count
        return count

    def peek(self, size: int = 1) -> bytes:
        """The bytes from the position on (at least SIZE where the file has them, often more), not consumed."""
        lo = self._pos - self._chunk_at
        if not 0 <= lo or lo + max(1, size) > len(self._chunk):
            chunk = bytearray(BUFFER_SIZE)
            self._chunk = bytes(chunk[:self._read_into(memoryview(chunk), self._pos)])
            self._chunk_at, lo = self._pos, 0
        return self._chunk[lo:]

    def get_byte_ranges(self, offsets: list[int], sizes: list[int]) -> list[bytearray]:
        """The bytes at each (offset, size), read together; the position stays. GDAL asks for a raster
        window's tile rows at once (rasterio's multi-range read) and /vsicurl/ fetches them side by
        side: one after the other, each cold row waited a round trip of its own. Each comes back in
        the buffer it was read into: GDAL copies them out at once (a copy into `bytes` first was a
        second pass over every byte of a window, and its page faults)."""
        here = self._here()
        if here is not self:
            return here.get_byte_ranges(offsets, sizes)
        buffers = self._buffers([max(0, min(size, self.size - offset)) for offset, size in zip(offsets, sizes)])
        if self.cache is not None:  # blockcache:: reads through its own blocks
            counts = [self._read_into(memoryview(buffer), offset) for offset, buffer in zip(offsets, buffers)]
        else:
            if self.closed:
                raise ValueError("I/O operation on closed file")
            with self._read_errors():
                counts = self._reader.read_ranges(self._handle, [(o, memoryview(b)) for o, b in zip(offsets, buffers)])
        for buffer, count in zip(buffers, counts):
            del buffer[count:]
        return buffers

    def _buffers(self, sizes: list[int]) -> list[bytearray]:
        """A buffer of each of SIZES (its bytes not cleared), reusing the last multi-range reads' that no one
        holds any more: a new `bytearray` of a tile row is zeroed on fresh pages, ~0.4 ms per MiB (a fifth of
        a cold window's time through `eotdl://`), and GDAL copies out of them at once. One that its caller
        kept (more references than the pool's) is left to it, never written again."""
        with self._buffers_lock:
            free = [b for b in self._range_buffers if sys.getrefcount(b) == 3]  # the pool, `b`, the argument
            buffers = []
            for size in sizes:  # the smallest one it fits in, else the largest grown
                fits = [i for i, b in enumerate(free) if len(b) >= size]
                pick = min(fits, key=lambda i: len(free[i])) if fits else \
                    max(range(len(free)), key=lambda i: len(free[i]), default=None)
                buffer = bytearray(size) if pick is None else free.pop(pick)
                if len(buffer) > size:
                    del buffer[size:]
                elif len(buffer) < size:
                    buffer.extend(bytes(size - len(buffer)))
                buffers.append(buffer)
            self._range_buffers = buffers[:KEPT_RANGE_BUFFERS] + free[:max(0, KEPT_RANGE_BUFFERS - len(buffers))]
        return buffers

    def readall(self) -> bytes:
        rest = bytearray(max(0, self.size - self._pos))
        count = self._read_into(memoryview(rest), self._pos)
        self._pos += count
        return bytes(rest[:count])

    def _read_into(self, target: memoryview, offset: int) -> int:
        if self.cache is not None:
            data = self.cache._fetch(offset, offset + len(target))
            target[:len(data)] = data
            return len(data)
        return self._fetch_into(target, offset)

    def _fetch_range(self, start: int, end: int) -> bytes:
        """The bytes from START to END, read from the repository (blockcache::'s fetcher)."""
        buffer = bytearray(max(0, min(end, self.size) - start))
        return bytes(buffer[:self._fetch_into(memoryview(buffer), start)])

    def _fetch_into(self, target: memoryview, offset: int) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        here = self._here()
        if here is not self:
            return here._fetch_into(target, offset)
        with self._read_errors():
            return self._reader.read_into(self._handle, target, offset)

    @contextmanager
    def _read_errors(self) -> Iterator[None]:
        """A failed read as the OSError a file's read raises, with the mount's errno."""
        try:
            yield
        except (ContentMismatch, RepositoryError) as exc:
            raise OSError(errno_for(exc), f"{self.path}: {exc}") from exc

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise OSError(errno.EINVAL, f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def __reduce__(self) -> tuple:
        if self.fs is None:
            raise TypeError(f"{self.path}: a file of Connection.open does not pickle; open it through eotdl:// "
                            "(fsspec.open or EotdlFileSystem.open)")
        return _reopen, (self.fs, self.version_path, self._pos, self.path)

    def _here(self) -> RemoteFile:
        """This file as this process can read it. A process forked with the file open (a DataLoader's
        or multiprocessing's worker, the dataset opened before) has none of the reader's threads and
        sockets, and its first read waited for them for ever: there the file is reopened through its
        filesystem, which connects anew in each process."""
        if self._pid == os.getpid():
            return self
        if self._forked is None or self._forked._pid != os.getpid():
            if self.fs is None:
                raise OSError(errno.EBADF, f"{self.path}: opened by Connection.open before this process forked; "
                                           "open it through eotdl:// to read it on in forked workers")
            self._forked = self.fs._open(self.version_path)
        return self._forked

    def close(self) -> None:
        if not self.closed:
            if self._pid == os.getpid():  # a forked process leaves the parent's reader alone
                self._handle.close()
            if self._forked is not None and self._forked._pid == os.getpid():
                self._forked.close()
            self._chunk = b""
            self._range_buffers = []
        super().close()


def _reopen(fs: Any, version_path: str, position: int, path: str) -> RemoteFile:
    """A pickled file, unpickled (in a worker process): VERSION_PATH opened through FS at POSITION,
    named PATH as the original was (`latest` in it names what the original read, not a newer version)."""
    file = fs.open(version_path, "rb")
    file.seek(position)
    file.path = file.name = path
    return file


def open_remote(reader: ContentReader, record: Record, entry: FileEntry, path: str) -> RemoteFile:
    return RemoteFile(reader, Content(record, entry), path)
