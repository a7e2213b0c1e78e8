"""Items of a catalog filtered by bbox and datetime interval, on a spatial index.

The index is a shapely STRtree of the items' bboxes; candidates it returns are checked
against the item geometry (STAC API semantics: the bbox intersects the geometry), then
against the time interval with vectorised numpy comparisons. Items without geometry
never match a bbox; items without any datetime never match an interval.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import shape

from .local import FolderSource
from .rules import StacError
from .walk import Source, walk

Bbox = tuple[float, float, float, float]
Interval = tuple[float, float]  # epoch seconds; -inf / inf for an open end
INDEX_FORMAT = 1
# The index a STAC version keeps beside its catalog.json (eotdlfs ingest and flush write it):
# hidden, as it is not part of the catalog, and a version never changes, so neither does it.
INDEX_FILE = ".stac-index.json"


def parse_bbox(text: str) -> Bbox:
    """'W,S,E,N' in degrees; W > E crosses the antimeridian."""
    try:
        west, south, east, north = (float(part) for part in text.split(","))
    except ValueError:
        raise StacError(f"bbox {text!r}: four numbers W,S,E,N expected") from None
    if not all(map(math.isfinite, (west, south, east, north))) or south > north:
        raise StacError(f"bbox {text!r}: finite W,S,E,N with S <= N expected")
    return west, south, east, north


def _epoch(text: str) -> float:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise StacError(f"datetime {text!r}: RFC 3339 expected (2020-01-31T00:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def parse_interval(text: str) -> Interval:
    """'A/B', 'A/..', '../B' or one instant 'A' (RFC 3339), as in the STAC API."""
    parts = text.split("/")
    if len(parts) == 1:
        moment = _epoch(parts[0])
        return moment, moment
    if len(parts) != 2 or parts == ["..", ".."] or parts == ["", ""]:
        raise StacError(f"datetime {text!r}: 'A/B', 'A/..' or '../B' expected")
    start = -math.inf if parts[0] in ("", "..") else _epoch(parts[0])
    end = math.inf if parts[1] in ("", "..") else _epoch(parts[1])
    if start > end:
        raise StacError(f"datetime {text!r}: the start is after the end")
    return start, end


def item_interval(item: dict[str, Any]) -> Interval | None:
    """An item's time span: its datetime, else start_datetime/end_datetime."""
    props = item.get("properties") or {}
    try:
        if props.get("datetime"):
            moment = _epoch(props["datetime"])
            return moment, moment
        if props.get("start_datetime") or props.get("end_datetime"):
            start = _epoch(props["start_datetime"]) if props.get("start_datetime") else -math.inf
            end = _epoch(props["end_datetime"]) if props.get("end_datetime") else math.inf
            return start, end
    except (StacError, TypeError, AttributeError):
        return None
    return None


@dataclass(frozen=True)
class IndexEntry:
    """What search needs of one item: where it is, where and when it lies."""

    path: str                             # the item document's path inside the version
    bbox: tuple[float, ...] | None        # W, S, E, N; None without geometry
    interval: Interval | None             # None without any datetime
    geometry: dict[str, Any] | None       # kept only when it is not just its bbox

    @classmethod
    def of(cls, path: str, item: dict[str, Any]) -> "IndexEntry":
        bbox = _item_bbox(item)
        geometry = item.get("geometry") if bbox is not None else None
        if geometry is not None and _is_box(geometry, bbox):
            geometry = None
        return cls(path, bbox, item_interval(item), geometry)


class ItemIndex:
    """The items of one catalog, indexed once, searched many times.

    `to_bytes()` is the whole index in one document (~100 bytes an item): a version
    never changes, so it can be kept beside it and loaded in milliseconds instead of
    walking every item document again.
    """

    def __init__(self, entries: Sequence[IndexEntry]):
        self.entries = list(entries)
        boxes = np.array([e.bbox or (np.nan,) * 4 for e in self.entries], dtype=float).reshape(-1, 4)
        times = np.array([e.interval or (np.nan, np.nan) for e in self.entries], dtype=float).reshape(-1, 2)
        self._located = np.flatnonzero(~np.isnan(boxes[:, 0]))
        self._tree = shapely.STRtree(shapely.box(*boxes[self._located].T))
        self._start, self._end = times[:, 0], times[:, 1]
        self._geometries: dict[int, Any] = {}

    @classmethod
    def from_items(cls, items: Sequence[tuple[str, dict[str, Any]]]) -> "ItemIndex":
        return cls([IndexEntry.of(path, item) for path, item in items])

    @classmethod
    def from_source(cls, source: Source) -> "ItemIndex":
        return cls.from_items([(node.path, node.stac) for node in walk(source) if node.stac["type"] == "Feature"])

    @classmethod
    def from_folder(cls, folder: Path) -> "ItemIndex":
        """A catalog on disk or on the mount (MNT/datasets/NAME/vN)."""
        return cls.from_source(FolderSource(folder))

    def to_bytes(self) -> bytes:
        rows = [[e.path, e.bbox, _finite(e.interval), e.geometry] for e in self.entries]
        return json.dumps({"stac_item_index": INDEX_FORMAT, "items": rows}, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "ItemIndex":
        try:
            doc = json.loads(data)
            if doc.get("stac_item_index") != INDEX_FORMAT:
                raise ValueError(f"format {doc.get('stac_item_index')!r}")
            return cls([IndexEntry(path, tuple(bbox) if bbox else None, _infinite(interval), geometry)
                        for path, bbox, interval, geometry in doc["items"]])
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise StacError(f"not an item index of this eotdlfs ({exc})") from None

    def search(self, bbox: Bbox | None = None, interval: Interval | None = None) -> list[str]:
        """Paths of the matching items, in catalog order."""
        chosen = np.arange(len(self.entries)) if bbox is None else self._in_bbox(bbox)
        if interval is not None:
            start, end = self._start[chosen], self._end[chosen]
            chosen = chosen[(start <= interval[1]) & (end >= interval[0])]  # nan compares False
        return [self.entries[i].path for i in np.sort(chosen)]

    def _in_bbox(self, bbox: Bbox) -> np.ndarray:
        west, south, east, north = bbox
        areas = [shapely.box(west, south, east, north)] if west <= east else [
            shapely.box(west, south, 180.0, north), shapely.box(-180.0, south, east, north)]
        found: set[int] = set()
        for area in areas:
            for hit in self._tree.query(area, predicate="intersects"):
                index = int(self._located[hit])
                if self.entries[index].geometry is None or self._geometry(index).intersects(area):
                    found.add(index)
        return np.fromiter(found, dtype=np.int64, count=len(found))

    def _geometry(self, index: int) -> Any:
        if index not in self._geometries:
            try:
                self._geometries[index] = shape(self.entries[index].geometry)
            except (TypeError, ValueError, KeyError, AttributeError, shapely.errors.GEOSException):
                self._geometries[index] = shapely.Point()  # unreadable: matches no bbox
        return self._geometries[index]


def _finite(interval: Interval | None) -> list[float | None] | None:
    """JSON has no infinity: an open end is null."""
    return None if interval is None else [v if math.isfinite(v) else None for v in interval]


def _infinite(interval: list[float | None] | None) -> Interval | None:
    if interval is None:
        return None
    start, end = interval
    return (-math.inf if start is None else float(start), math.inf if end is None else float(end))


def _is_box(geometry: dict[str, Any], bbox: tuple[float, ...]) -> bool:
    """Whether GEOMETRY is the rectangle BBOX (one ring on its four corners), so the bbox answers intersects.

    Checked on the coordinates: building a shapely geometry per item would double the indexing time.
    """
    if geometry.get("type") != "Polygon" or not isinstance(geometry.get("coordinates"), list):
        return False
    rings = geometry["coordinates"]
    if len(rings) != 1 or not isinstance(rings[0], list) or len(rings[0]) != 5:
        return False
    west, south, east, north = bbox
    corners = {(west, south), (east, south), (east, north), (west, north)}
    try:
        return {(float(p[0]), float(p[1])) for p in rings[0]} == corners
    except (TypeError, ValueError, IndexError):
        return False


def _item_bbox(item: dict[str, Any]) -> tuple[float, ...] | None:
    """The bbox to index: the item's own, or its geometry's bounds; None without geometry."""
    geometry = item.get("geometry")
    if not isinstance(geometry, dict):
        return None
    bbox = item.get("bbox")
    try:
        if isinstance(bbox, list) and len(bbox) in (4, 6):
            box = tuple(float(v) for v in ((bbox[0], bbox[1], bbox[3], bbox[4]) if len(bbox) == 6 else bbox))
            if box[0] <= box[2]:  # one crossing the antimeridian: its geometry's bounds cover it
                return box
        return tuple(shape(geometry).bounds)
    except (TypeError, ValueError, AttributeError, shapely.errors.GEOSException):
        return None
