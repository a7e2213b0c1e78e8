"""Where a TIFF's tiles (or strips) lie in the file, read from its header: a seeking reader at
a tile is fetched that tile in one request, as GDAL's /vsicurl/ fetches it.

GDAL reads a Cloud-Optimized GeoTIFF's IFDs and TileOffsets/TileByteCounts arrays at open,
then one tile per read; the kernel splits such a read into 128 KiB requests, which piecewise
(`pieces`) cost a round trip each. `parse_layout` walks the IFD chain (classic TIFF and
BigTIFF, either byte order) and keeps only the byte span of every tile and strip. The header
comes from anyone, so everything is bounded: IFDs, entries, spans and the bytes read; a loop
in the chain, a span past the file's end or an unknown value type ends the walk, and what
was found before stays usable (a layout only steers fetch sizes, never the bytes served).
"""

from __future__ import annotations

import bisect
import logging
import struct
import threading
from array import array
from collections import OrderedDict
from typing import Callable

log = logging.getLogger(__name__)

MAX_IFDS = 256
MAX_ENTRIES = 4096  # per IFD
MAX_SPANS = 1 << 18  # tiles and strips in all: a layout holds 4 MiB at most
KEPT_LAYOUTS = 16
SUFFIXES = (".tif", ".tiff")
MAX_SPAN_BYTES = 4 << 20  # a longer tile or strip (a whole image in one strip) is not fetched whole:
# GDAL may want a few rows of it
# Tags: StripOffsets, StripByteCounts, TileOffsets, TileByteCounts
OFFSET_TAGS = {273: 279, 324: 325}
# TIFF value types that offsets and counts come in: SHORT, LONG, LONG8 (BigTIFF)
TYPES = {3: "H", 4: "I", 16: "Q"}

Read = Callable[[int, int], bytes]  # (offset, length) -> the bytes there (fewer at the file's end)


class Layout:
    """The byte spans of a file's tiles and strips, sorted by start."""

    def __init__(self, spans: list[tuple[int, int]]):
        merged: list[tuple[int, int]] = []
        for start, end in sorted(set(spans)):
            if merged and start < merged[-1][1]:  # overlapping (shared or odd) spans: keep the first
                continue
            merged.append((start, end))
        self._starts = array("q", (start for start, _ in merged))
        self._ends = array("q", (end for _, end in merged))

    def __len__(self) -> int:
        return len(self._starts)

    def span_at(self, offset: int) -> tuple[int, int] | None:
        """The (start, end) of the tile or strip holding byte OFFSET, if any."""
        i = bisect.bisect_right(self._starts, offset) - 1
        if i >= 0 and offset < self._ends[i]:
            return self._starts[i], self._ends[i]
        return None


    def span_from(self, offset: int) -> tuple[int, int] | None:
        """The (start, end) of the first tile or strip starting at OFFSET or after, if any."""
        i = bisect.bisect_left(self._starts, offset)
        return (self._starts[i], self._ends[i]) if i < len(self._starts) else None


class _Header:
    def __init__(self, read: Read, size: int):
        head = read(0, 16)
        if len(head) < 8 or head[:2] not in (b"II", b"MM"):
            raise ValueError("not a TIFF")
        self.read, self.size = read, size
        self.order = "<" if head[:2] == b"II" else ">"
        magic = struct.unpack(self.order + "H", head[2:4])[0]
        if magic == 42:
            self.big, self.first = False, struct.unpack(self.order + "I", head[4:8])[0]
        elif magic == 43 and len(head) >= 16:
            self.big, self.first = True, struct.unpack(self.order + "Q", head[8:16])[0]
        else:
            raise ValueError(f"not a TIFF (magic {magic})")

    def exact(self, offset: int, length: int) -> bytes:
        if offset + length > self.size:
            raise ValueError(f"{length} bytes at {offset} run past the file's end")
        data = self.read(offset, length)
        if len(data) != length:
            raise ValueError(f"short read of {length} bytes at {offset}")
        return data

    def ifd(self, offset: int) -> tuple[dict[int, tuple[int, int, bytes]], int]:
        """The entries (tag -> (type, count, inline value or offset bytes)) at OFFSET, and the next IFD's offset."""
        count_fmt, entry_size, word = ("Q", 20, 8) if self.big else ("H", 12, 4)
        count_size = struct.calcsize(count_fmt)
        count = struct.unpack(self.order + count_fmt, self.exact(offset, count_size))[0]
        if count > MAX_ENTRIES:
            raise ValueError(f"IFD at {offset} has {count} entries")
        body = self.exact(offset + count_size, count * entry_size + word)
        entries = {}
        for i in range(count):
            entry = body[i * entry_size:(i + 1) * entry_size]
            tag, kind = struct.unpack(self.order + "HH", entry[:4])
            number = struct.unpack(self.order + ("Q" if self.big else "I"), entry[4:4 + word])[0]
            entries[tag] = (kind, number, entry[4 + word:])
        return entries, struct.unpack(self.order + ("Q" if self.big else "I"), body[-word:])[0]

    def values(self, kind: int, count: int, raw: bytes) -> tuple[int, ...]:
        code = TYPES.get(kind)
        if code is None:
            raise ValueError(f"offsets of TIFF type {kind}")
        length = count * struct.calcsize(code)
        if length <= len(raw):  # the value itself fits in the entry
            data = raw[:length]
        else:
            data = self.exact(struct.unpack(self.order + ("Q" if self.big else "I"), raw)[0], length)
        return struct.unpack(f"{self.order}{count}{code}", data)


def parse_layout(read: Read, size: int) -> Layout:
    """The tiles and strips of the TIFF of SIZE bytes that READ reads; ValueError if its first
    IFD is not one (a later IFD that is malformed only ends the walk)."""
    header = _Header(read, size)
    spans: list[tuple[int, int]] = []
    seen: set[int] = set()
    offset = header.first
    while offset and offset not in seen and len(seen) < MAX_IFDS:
        seen.add(offset)
        try:
            entries, offset = header.ifd(offset)
            for offsets_tag, counts_tag in OFFSET_TAGS.items():
                if offsets_tag in entries and counts_tag in entries:
                    spans.extend(_spans(header, entries[offsets_tag], entries[counts_tag], MAX_SPANS - len(spans)))
        except (ValueError, struct.error):
            if len(seen) == 1 and not spans:
                raise
            break
    return Layout(spans)


def _spans(header: _Header, offsets_entry: tuple[int, int, bytes], counts_entry: tuple[int, int, bytes],
           room: int) -> list[tuple[int, int]]:
    if offsets_entry[1] != counts_entry[1] or offsets_entry[1] > room:
        raise ValueError(f"{offsets_entry[1]} offsets, {counts_entry[1]} byte counts, room for {room}")
    starts, lengths = header.values(*offsets_entry), header.values(*counts_entry)
    return [(start, start + length) for start, length in zip(starts, lengths)
            if 0 < length <= MAX_SPAN_BYTES and start + length <= header.size]


class Layouts:
    """The layouts of the TIFFs read lately, by checksum: each parsed once, by the first seeking
    reader to ask (others go on without it meanwhile rather than wait)."""

    def __init__(self, kept: int = KEPT_LAYOUTS):
        self.kept = kept
        # Guarded by _lock (a leaf: the parse runs outside it).
        self._lock = threading.Lock()
        self._layouts: OrderedDict[str, Layout | None] = OrderedDict()  # None: not a TIFF we can use
        self._parsing: set[str] = set()

    def span_at(self, path: str, checksum: str, size: int, read: Read, offset: int) -> tuple[int, int] | None:
        """The tile or strip holding OFFSET of the file PATH (parsed with READ the first time), if known."""
        layout = self.layout(path, checksum, size, read)
        return layout.span_at(offset) if layout is not None else None

    def known(self, checksum: str) -> Layout | None:
        """The layout of the file CHECKSUM if it was parsed already (this never parses)."""
        with self._lock:
            return self._layouts.get(checksum)

    def layout(self, path: str, checksum: str, size: int, read: Read) -> Layout | None:
        """The layout of the file PATH (parsed with READ the first time), if known."""
        if not path.lower().endswith(SUFFIXES):
            return None
        with self._lock:
            if checksum in self._layouts:
                self._layouts.move_to_end(checksum)
                return self._layouts[checksum]
            if checksum in self._parsing:
                return None
            self._parsing.add(checksum)
        layout: Layout | None = None
        try:
            layout = parse_layout(read, size)
        except (ValueError, struct.error) as exc:
            log.info("%s: no tile layout (%s)", path, exc)
        except Exception as exc:  # a failed read: the next seeking read tries again
            log.info("%s: tile layout not read (%s)", path, exc)
            with self._lock:
                self._parsing.discard(checksum)
            return None
        with self._lock:
            self._parsing.discard(checksum)
            self._layouts[checksum] = layout
            while len(self._layouts) > self.kept:
                self._layouts.popitem(last=False)
        return layout
