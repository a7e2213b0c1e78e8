"""diskcache's file storage for the block cache (`block_cache`): blocks written beforehand, in
one `os.write` (O_DIRECT when the memory allows), into files of diskcache's naming; a block kept
in the index itself; a piece of a run of pieces written as one file (its offset in its row).

Blocks in page-aligned memory are written with O_DIRECT: a cold read hands its readers the
fetched bytes from memory, so pushing a second copy of every byte through the page cache would
only cost fresh pages and evict pages someone still reads.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os

import diskcache

log = logging.getLogger(__name__)

DIRECT_ALIGN = 4096  # O_DIRECT wants the memory and the length aligned to the disk's blocks


class _InlineBlock:
    """A block for `_BlockDisk.store` to keep in the index itself (a BLOB of its row)."""

    def __init__(self, data: memoryview):
        self.data = data


class _WrittenBlock:
    """A block file already written, for `_BlockDisk.store` to enter as it is; or, with an
    OFFSET, one piece of a run of pieces written as one file (`put_runs`)."""

    def __init__(self, filename: str, size: int, offset: int | None = None):
        self.filename, self.size, self.offset = filename, size, offset


def _direct_capable(view: memoryview) -> bool:
    if view.readonly or view.nbytes % DIRECT_ALIGN:
        return False
    return ctypes.addressof(ctypes.c_char.from_buffer(view)) % DIRECT_ALIGN == 0


def _after(views: list[memoryview], skip: int) -> list[memoryview]:
    """VIEWS without their first SKIP bytes."""
    for i, view in enumerate(views):
        if skip < view.nbytes:
            return [view[skip:], *views[i + 1:]]
        skip -= view.nbytes
    return []


class _BlockDisk(diskcache.Disk):
    """diskcache's file storage, with blocks written beforehand (`write_block`: one
    `os.write`, O_DIRECT when the memory allows) into a file of diskcache's naming."""

    def __init__(self, directory: str, **kwargs):
        super().__init__(directory, **kwargs)
        self._direct = True  # until the cache's file system refuses O_DIRECT

    def filename(self, key=diskcache.UNKNOWN, value=diskcache.UNKNOWN):
        # One level of 256 folders, not diskcache's 65,536: a fresh cache would otherwise
        # make a folder for nearly every block it stores.
        name = os.urandom(16).hex()
        filename = os.path.join(name[:2], name[2:] + ".val")
        return filename, os.path.join(self._directory, filename)

    def store(self, value, read, key=diskcache.UNKNOWN):
        if isinstance(value, _InlineBlock):
            # Size 0 as diskcache's own inline values: the bytes are counted in the
            # database's pages, which `volume()` (and so eviction) includes.
            return 0, diskcache.core.MODE_RAW, None, value.data
        if not isinstance(value, _WrittenBlock):
            return super().store(value, read, key)
        return value.size, diskcache.core.MODE_BINARY, value.filename, value.offset  # the offset in its row's value

    def write_block(self, data: bytes | memoryview | list[memoryview]) -> _WrittenBlock:
        """DATA as one file; a list (the pieces of a run) with one `writev`, not copied together
        first (fresh pages cost ~100 us per 64 KiB on this project's VMs)."""
        views = [memoryview(part).cast("B") for part in (data if isinstance(data, list) else [data])]
        size = sum(view.nbytes for view in views)
        filename, path = self.filename()
        direct = self._direct and all(_direct_capable(view) for view in views)
        fd = self._create(path, direct)
        try:
            written = 0
            while written < size:
                try:
                    written += (os.write(fd, views[0][written:]) if len(views) == 1
                                else os.writev(fd, _after(views, written)))
                except OSError as exc:
                    if exc.errno != errno.EINVAL or not direct:
                        raise
                    direct = False  # this file system wants other alignment: write it plainly
                    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
        except BaseException:
            self.remove(filename)
            raise
        finally:
            os.close(fd)
        return _WrittenBlock(filename, size)

    def _create(self, path: str, direct: bool) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        for _ in range(9):  # eviction removes emptied folders, maybe this one meanwhile
            try:
                return os.open(path, flags | (os.O_DIRECT if direct else 0), 0o600)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            except OSError as exc:
                if exc.errno != errno.EINVAL or not direct:
                    raise
                log.info("the cache's file system refuses O_DIRECT; blocks go through the page cache")
                self._direct = direct = False
        return os.open(path, flags, 0o600)  # the last try: its error is the one to report
