"""Reading byte ranges of repository files through the block cache, with read-ahead.

`ContentReader.read` is the whole cold and warm read path: advise the handle's read-ahead
window, queue read-ahead fetches, then copy the requested range out of the bytes of recent
fetches (memory), or out of cached blocks, read back from disk and checked once per block.
A seeking reader's miss is fetched in small pieces (`pieces`), not as a whole block; a jump
to the start of a TIFF's tile fetches that tile's pieces in one request (`tiles`), with the
tiles of the window the reader's last one says it reads (`tilewindows`). A multi-range read
(`read_ranges`: GDAL's tile rows of a window, through `eotdl://`) says all that at once.

Locks. An `OpenFile`'s `lock` guards its read-ahead window, its `TileWindows` and the blocks
it keeps; it is held only for that bookkeeping and the copy out of a kept block, never while
calling the fetcher, so it comes before no other lock. `ContentReader._lock` guards the first-wait times
of demanded blocks and is a leaf.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from concurrent.futures import Future
from typing import Callable

from eotdlfs.fs.content import Content
from eotdlfs.fs.fetcher import BlockFetcher
from eotdlfs.fs.pieces import PIECE_SIZE, STORE_AT_BYTES, PieceFetcher
from eotdlfs.fs.readahead import ReadAheadWindow
from eotdlfs.fs.tiles import Layouts
from eotdlfs.fs.tilewindows import TileWindows
from eotdlfs.repository import Unreachable

PAGE = 4096
KEPT_SOURCES = 2  # a fetched block may pin its whole request (8 MiB) while kept
# A block whose fetch hung (half the bound or more) and then failed fails again at once for this
# long, on the same handle: the kernel reads a page again after a failed read-ahead, through the
# same open file, and that second callback started a fetch of its own and waited a whole bound more
# (18.7 s for one `read` behind a silent server; a seeking read's pieces too: 120 s for a `dd skip=`
# with the default 60 s timeout). Another open (a user trying again: the server may be back) fetches.
# A fetch that fails fast (a refused connection) is tried again at once: the server may be back.
HUNG_FAILURE_KEPT_S = 2.0
# After such a failure the server counts as silent, on every handle, until a fetch is answered: a
# walker (`cp -r`, `rsync`, a loader) behind a silent server waited a whole bound per file (65 s
# each, 10,000 files). Every PROBE_EVERY_S the reads that need it ask it again, waiting at most
# PROBE_WAIT_S (a server back answers sooner: a user trying again is served); between, they fail at once.
SILENT_PROBE_EVERY_S = 5.0
SILENT_PROBE_WAIT_S = 0.5


class OpenFile:
    """One open file: its read-ahead state and the few blocks it read last."""

    def __init__(self, content: Content, window: ReadAheadWindow, opened: int):
        # Set once.
        self.content = content
        self.opened = opened  # fetcher serial at open: a checksum failure after it fails this handle
        # Guarded by lock.
        self.lock = threading.Lock()
        self.window = window
        self.ahead_until = 0
        self.tiles = TileWindows()
        # The blocks read last, checked: later reads of them are plain copies.
        self.sources: OrderedDict[int, memoryview] = OrderedDict()
        self.hung: dict[int, tuple[float, BaseException]] = {}  # block -> when its hung fetch failed, how

    def keep_locked(self, index: int, source: memoryview) -> None:
        self.sources[index] = source
        while len(self.sources) > KEPT_SOURCES:
            self.sources.popitem(last=False)

    def close(self) -> None:
        with self.lock:
            self.sources.clear()


def _copy(source: memoryview, lo: int, target: memoryview) -> None:
    target[:] = source[lo:lo + len(target)]


class ContentReader:
    def __init__(self, fetcher: BlockFetcher, first_window: int = 2 << 20,
                 max_window: int = 32 << 20, demand_timeout: float = 120.0, piece_size: int = PIECE_SIZE,
                 store_pieces_at: int = STORE_AT_BYTES):
        self.fetcher = fetcher
        self.cache = fetcher.cache
        self.block_size = fetcher.block_size
        self.first_window = first_window
        self.max_window = max_window
        self.demand_timeout = demand_timeout
        self.pieces = PieceFetcher(fetcher, piece_size, store_at=store_pieces_at)
        self.layouts = Layouts()
        # When a reader first waited for each fetch still running: one that hangs (a silent server)
        # fails the readers after it at once, not each after a bound of its own (the kernel reads
        # a page again after a failed read-ahead: two callbacks for one read).
        self._lock = threading.Lock()
        self._first_waits: weakref.WeakKeyDictionary[Future, float] = weakref.WeakKeyDictionary()
        # Guarded by _lock: since when the server is silent (a read waited half a bound for nothing), and
        # when its last probe began.
        self._silent_since: float | None = None
        self._probe_at: float | None = None

    def open(self, content: Content, seeking_only: bool = False) -> OpenFile:
        window = ReadAheadWindow(self.first_window, self.max_window, seeking_only)
        return OpenFile(content, window, self.fetcher.serial())

    def read(self, handle: OpenFile, offset: int, size: int) -> bytes:
        buffer = bytearray(max(0, min(size, handle.content.size - offset)))
        count = self.read_into(handle, memoryview(buffer), offset)
        return bytes(buffer[:count]) if count < len(buffer) else bytes(buffer)

    def read_into(self, handle: OpenFile, target: memoryview, offset: int) -> int:
        """Fill TARGET with the file's bytes from OFFSET (fewer at its end); the count. Waits for the
        server at most `demand_timeout` s in all, however many blocks TARGET spans."""
        content, bs = handle.content, self.block_size
        end = min(offset + len(target), content.size)
        # Read-ahead may have found the file corrupt while this reader was on its way.
        self.fetcher.check_not_failed(content, handle.opened)
        if offset >= end:
            return 0
        seeking, jumped = self._read_ahead(handle, offset, end)
        until = self._pieces_until(handle, offset, end, jumped) if seeking else 0
        finished, deadline = [], time.monotonic() + self.demand_timeout
        for index in range(offset // bs, (end - 1) // bs + 1):
            lo, hi = max(offset, index * bs) - index * bs, min(end, (index + 1) * bs) - index * bs
            at = index * bs + lo - offset
            self._copy_block(handle, index, lo, target[at:at + hi - lo], deadline, seeking, until)
            if hi == bs:
                finished.append(index)
        if finished:
            self.fetcher.finished_reading(content.checksum, finished)
        return end - offset

    def read_ranges(self, handle: OpenFile, ranges: list[tuple[int, memoryview]]) -> list[int]:
        """Fill each (offset, target) of RANGES with the file's bytes there (fewer at its end); their counts.
        A multi-range read is a seeking reader's (GDAL's tile rows of a window): the ranges that pieces
        may serve (`_piecewise`, no block of theirs held whole) are read together (`PieceFetcher.read_ranges`),
        the others as `read_into` reads them. The handle's read-ahead window is not moved: these reads
        say where the reader is going, all at once."""
        content = handle.content
        self.fetcher.check_not_failed(content, handle.opened)
        ranges = [(offset, target[:max(0, min(len(target), content.size - offset))]) for offset, target in ranges]
        bs, final = self.block_size, content.block_count(self.block_size) - 1
        spans = [range(offset // bs, (offset + len(target) - 1) // bs + 1) for offset, target in ranges]
        # `_piecewise` and no block held whole, for all the ranges' blocks in one look-up (a look-up
        # per block was a tenth of a window's time): a block held whole, or the one before it, is read whole
        asked = {i for span in spans for i in range(max(0, span.start - 1), span.stop)}
        held = self.fetcher.held_whole(content.checksum, asked)
        together, alone = [], []
        for (offset, target), span in zip(ranges, spans):
            in_pieces = all(i < final and i not in held and i - 1 not in held for i in span)
            (together if in_pieces else alone).append((offset, target))
        if together:
            queued = self.server_silent()  # a probe waits SILENT_PROBE_WAIT_S, not a read timeout
            self._read_pieces(handle, None, time.monotonic() + self.demand_timeout, lambda wait_until, refused:
                              self.pieces.read_ranges(content, handle.opened, together, wait_until, refused, queued))
        for offset, target in alone:
            self.read_into(handle, target, offset)
        return [len(target) for _, target in ranges]

    def close(self) -> None:
        self.pieces.close()

    def _read_ahead(self, handle: OpenFile, offset: int, end: int) -> tuple[bool, bool]:
        """Queue the read-ahead this read earns; whether the handle is seeking (see `pieces`),
        and whether this read jumped (see `ReadAheadWindow.jumped`)."""
        bs = self.block_size
        with handle.lock:
            start, stop = handle.window.advise(offset, end - offset)
            seeking, jumped = handle.window.seeking, handle.window.jumped
            if not jumped:
                handle.tiles.read(offset, end)
            if stop <= start:
                handle.ahead_until = 0
                return seeking, jumped
            first = max(start // bs, handle.ahead_until)
            # a window past the file's end asks for nothing there (the fetcher would stop at
            # the end anyway, after taking its locks, on every read of the last window)
            last = min(-(-stop // bs), handle.content.block_count(bs))
            # Top up in runs of whole requests while what is already asked for lasts half
            # a window: a top-up per read would make a range request per block.
            topping_up = first > start // bs and first * bs - end > (stop - start) // 2
        if last - first >= self.fetcher.request_blocks or (last > first and not topping_up):
            reached = self.fetcher.read_ahead(handle.content, first, last, handle.opened)
            with handle.lock:
                handle.ahead_until = max(handle.ahead_until, reached)
        return seeking, jumped

    def _piecewise(self, content: Content, index: int) -> bool:
        """Whether a seeking reader's miss of block INDEX is fetched in pieces: not the file's
        final block (it waits for the file's checksum), nor a block being fetched whole, nor
        the block after one fetched whole: a reader finding the pages another reader's stream
        left in the kernel's cache looks as if it jumped to that stream's front."""
        checksum = content.checksum
        return (index < content.block_count(self.block_size) - 1
                and not self.fetcher.in_flight(checksum, index)
                and not (index > 0 and self.fetcher.fetched_whole(checksum, index - 1)))

    def _pieces_until(self, handle: OpenFile, offset: int, end: int, jumped: bool) -> int:
        """Where the pieces that a seeking read of OFFSET to END fetches with its first ones
        end: the read's end (a read across a block boundary would otherwise wait for a round
        trip per block), or, on a jump to a TIFF tile, the end of the tiles of the row that
        the reader's last rows say it reads; those rows' other tiles of its window are queued
        side by side (`tilewindows`)."""
        rows = self._tile_rows(handle, offset, end) if jumped and not handle.window.seeking_only else []
        if not rows:
            layout = None if jumped or handle.window.seeking_only else self.layouts.known(handle.content.checksum)
            with handle.lock:
                tile_end = handle.tiles.continued(end, layout) if layout is not None else 0
            return self._piecewise_until(handle.content, offset, max(end, tile_end))
        until = self._piecewise_until(handle.content, offset, max(end, rows[0][1]))
        self._fetch_ahead(handle, offset, until)  # this row's first: the reader waits for it
        for start, stop in rows[1:]:
            self._fetch_ahead(handle, start, self._piecewise_until(handle.content, start, stop))
        return until

    def _piecewise_until(self, content: Content, offset: int, until: int) -> int:
        """UNTIL, or short of it the first block after OFFSET's that is not fetched in pieces
        (held whole, being fetched whole, the final block)."""
        bs = self.block_size
        for index in range(offset // bs + 1, -(-until // bs)):
            if self.fetcher.fetched_whole(content.checksum, index) or not self._piecewise(content, index):
                return index * bs
        return until

    def _fetch_ahead(self, handle: OpenFile, start: int, until: int) -> None:
        """Queue the pieces from START's to UNTIL that are neither kept nor being fetched, unless
        START's block is (or is being) fetched whole; wait for none."""
        index = start // self.block_size
        if self.server_silent():  # a probe asks for what its reader waits for, no more
            return
        if not self.fetcher.fetched_whole(handle.content.checksum, index) and self._piecewise(handle.content, index):
            self.pieces.read_into(handle.content, handle.opened, start - start % self.pieces.piece_size,
                                  memoryview(b""), time.monotonic(), until)

    def _tile_rows(self, handle: OpenFile, start: int, end: int) -> list[tuple[int, int]]:
        """The byte ranges worth fetching for a read of START to END that begins a TIFF tile
        (its row's tiles first), if it does and the layout is known (else none)."""
        content = handle.content
        header: list[OpenFile] = []  # a handle of its own for reading the header, made if needed

        def read(at: int, length: int) -> bytes:
            if not header:
                # in pieces: a reader that jumped into a file without reading its header (GDAL
                # reads it first, so it is usually held) is not fetched a whole block for it;
                # a seeking-only handle asks for no layout of its own (`_pieces_until`)
                header.append(self.open(content, seeking_only=True))
            return self.read(header[0], at, length)

        layout = self.layouts.layout(content.entry.path, content.checksum, content.size, read)
        # GDAL reads a tile from its start; the kernel's request for that read begins on the
        # page before at most (a page or two of the tile before). Any other tile a read
        # reaches may be only the kernel's read-ahead past what the reader wants.
        span = layout.span_at(min(end - 1, start - start % PAGE + 2 * PAGE)) if layout is not None else None
        if span is None or span[0] < start:
            return []
        with handle.lock:
            return handle.tiles.jumped(span[0], layout)

    def _raise_if_hung(self, handle: OpenFile, index: int) -> None:
        with handle.lock:
            failed = handle.hung.get(index)
        if failed is not None and time.monotonic() - failed[0] < HUNG_FAILURE_KEPT_S:
            raise failed[1]

    def server_silent(self) -> bool:
        """Whether reads hold the server silent (see SILENT_PROBE_EVERY_S)."""
        return self._silent_since is not None

    def _server_deadline(self, deadline: float) -> float:
        """DEADLINE for a read about to ask the server: sooner if it is silent and a probe is on, or
        `Unreachable` at once between probes."""
        if self._silent_since is None:  # the usual case, read without the lock on every fetch
            return deadline
        with self._lock:
            if self._silent_since is None:
                return deadline
            now = time.monotonic()
            if self._probe_at is None or now - self._probe_at >= SILENT_PROBE_EVERY_S:
                self._probe_at = now
            elif now - self._probe_at >= SILENT_PROBE_WAIT_S:
                raise Unreachable(f"the repository has not answered reads for {now - self._silent_since:.0f} s:"
                                  f" asked again in {self._probe_at + SILENT_PROBE_EVERY_S - now:.1f} s")
            return min(deadline, self._probe_at + SILENT_PROBE_WAIT_S)

    def _read_pieces(self, handle: OpenFile, index: int | None, deadline: float,
                     read: Callable[[float, Unreachable | None], bool]) -> None:
        """READ(wait until, refusal) of pieces of HANDLE's file (block INDEX, or a multi-range read's),
        under the silent hold: between probes pieces held still serve and a missing one fails at once.
        Only bytes the server sent end the silence: held pieces say nothing of it."""
        if index is not None:
            self._raise_if_hung(handle, index)
        started = time.monotonic()
        try:
            wait_until, refused = self._server_deadline(deadline), None
        except Unreachable as exc:
            wait_until, refused = started, exc
        try:
            fetched = read(wait_until, refused)
        except Exception as exc:  # the kernel's second callback for this `read` fails at once, as a block's
            if time.monotonic() - started >= self.demand_timeout / 2:
                if index is not None:
                    self._note_hung(handle, index, exc)
                self._note_silent(exc)
            raise
        if fetched:
            self._answered()

    def _note_hung(self, handle: OpenFile, index: int, exc: BaseException) -> None:
        now = time.monotonic()
        with handle.lock:
            for key in [k for k, (at, _) in handle.hung.items() if now - at >= HUNG_FAILURE_KEPT_S]:
                del handle.hung[key]
            handle.hung[index] = (now, exc)

    def _note_silent(self, exc: BaseException) -> None:
        """A read waited half a bound or more and got EXC: the server is silent, if that is what it says."""
        if isinstance(exc, (TimeoutError, Unreachable)):
            with self._lock:
                self._silent_since = self._silent_since or time.monotonic()

    def _answered(self) -> None:
        """A fetch brought bytes: the server answers."""
        if self._silent_since is not None:
            with self._lock:
                self._silent_since = self._probe_at = None

    def _copy_block(self, handle: OpenFile, index: int, lo: int, target: memoryview, deadline: float,
                    seeking: bool, until: int) -> None:
        with handle.lock:
            source = handle.sources.get(index)
            if source is not None:
                return _copy(source, lo, target)
        content = handle.content
        source = self.fetcher.kept_block(content.checksum, index)
        if source is None and seeking and self._piecewise(content, index):
            return self._read_pieces(handle, index, deadline, lambda wait_until, refused: self.pieces.read_into(
                content, handle.opened, index * self.block_size + lo, target, wait_until, until, refused))
        if source is None:
            self._raise_if_hung(handle, index)
            deadline = self._server_deadline(deadline)
            future = self.fetcher.demand(handle.content, index, handle.opened)
            with self._lock:
                first_wait = self._first_waits.setdefault(future, time.monotonic())
            wait_until = min(deadline, first_wait + self.demand_timeout)
            part = None
            try:
                if not future.done():  # copy this read's bytes as soon as they arrive, not the whole request's
                    part = self.fetcher.arrived_part(content, index, lo + len(target),
                                                     max(0.0, wait_until - time.monotonic()))
                if part is None:
                    source = future.result(timeout=max(0.0, wait_until - time.monotonic()))
            except Exception as exc:  # not done: our wait ended (TimeoutError), the fetch goes on
                if time.monotonic() - first_wait >= self.demand_timeout / 2:
                    if future.done():
                        self._note_hung(handle, index, exc)
                    self._note_silent(exc)
                raise
            self._answered()
            if part is not None:
                return _copy(part, lo, target)
        with handle.lock:
            handle.keep_locked(index, source)
            return _copy(source, lo, target)
