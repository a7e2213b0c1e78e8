"""stac search: the spatial index answers exactly what a brute-force filter answers."""

from __future__ import annotations

import json
import math
import random
from datetime import datetime, timezone

import pytest
from shapely.geometry import box, shape

from eotdlfs.stac import StacError, read_local_catalog
from eotdlfs.stac.search import ItemIndex, parse_bbox, parse_interval
from tests.stac.catalogs import item_doc, write_catalog
from tests.stac.test_local_catalog import add_link


def _moment(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


# id(geometry) -> (geometry, its shape). The geometry is kept alive with its shape: keyed by
# id alone, a later test's geometry could reuse a freed id and get another item's shape.
_SHAPES: dict[int, tuple[dict, object]] = {}


def _shape(item: dict):
    geometry = item["geometry"]
    kept = _SHAPES.get(id(geometry))
    if kept is None or kept[0] is not geometry:
        kept = _SHAPES[id(geometry)] = (geometry, shape(geometry))
    return kept[1]


def brute_force(items, bbox, interval) -> list[str]:
    """Every item checked one by one, with the STAC API's rules written out plainly."""
    hits = []
    for path, item in items:
        if bbox is not None:
            if item.get("geometry") is None:
                continue
            west, south, east, north = bbox
            areas = [box(west, south, east, north)] if west <= east else [
                box(west, south, 180, north), box(-180, south, east, north)]
            if not any(_shape(item).intersects(area) for area in areas):
                continue
        if interval is not None:
            props = item["properties"]
            if props.get("datetime"):
                start = end = _moment(props["datetime"])
            elif props.get("start_datetime") or props.get("end_datetime"):
                start = _moment(props["start_datetime"]) if props.get("start_datetime") else -math.inf
                end = _moment(props["end_datetime"]) if props.get("end_datetime") else math.inf
            else:
                continue
            if start > interval[1] or end < interval[0]:
                continue
        hits.append(path)
    return hits


def random_items(rng: random.Random, count: int) -> list[tuple[str, dict]]:
    items = []
    for i in range(count):
        west, south = rng.uniform(-180, 178), rng.uniform(-90, 88)
        bbox = [west, south, min(west + rng.uniform(0.001, 8), 180), min(south + rng.uniform(0.001, 8), 90)]
        item = item_doc(f"i{i}", bbox, f"2020-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T00:00:00Z", {})
        kind = rng.random()
        if kind < 0.05:  # no geometry: never in a bbox
            item["geometry"], item["bbox"] = None, None
        elif kind < 0.10:  # a span instead of an instant, sometimes open-ended
            item["properties"] = {"datetime": None, "start_datetime": "2020-03-01T00:00:00Z",
                                  "end_datetime": rng.choice(["2020-04-01T00:00:00Z", None])}
        elif kind < 0.15:  # a triangle: its bbox is bigger than the geometry
            item["geometry"] = {"type": "Polygon", "coordinates": [[
                [bbox[0], bbox[1]], [bbox[2], bbox[1]], [bbox[0], bbox[3]], [bbox[0], bbox[1]]]]}
        elif kind < 0.17:
            item["properties"] = {"datetime": None}
        items.append((f"items/i{i}.json", item))
    return items


def random_query(rng: random.Random):
    bbox = interval = None
    if rng.random() < 0.8:
        west, south = rng.uniform(-180, 180), rng.uniform(-90, 80)
        east = rng.uniform(-180, 180) if rng.random() < 0.1 else min(west + rng.uniform(0, 60), 180)
        bbox = (west, south, east, min(south + rng.uniform(0, 40), 90))
    if rng.random() < 0.7:
        a = f"2020-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T00:00:00Z"
        b = f"2020-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T00:00:00Z"
        a, b = sorted([a, b])
        interval = parse_interval(rng.choice([f"{a}/{b}", f"{a}/..", f"../{b}", a]))
    return bbox, interval


def test_index_matches_brute_force_on_random_queries():
    rng = random.Random(15)
    items = random_items(rng, 2000)
    index = ItemIndex.from_items(items)
    stored = ItemIndex.from_bytes(index.to_bytes())  # what a kept index answers, after JSON
    for _ in range(150):
        bbox, interval = random_query(rng)
        expected = brute_force(items, bbox, interval)
        assert index.search(bbox, interval) == expected, (bbox, interval)
        assert stored.search(bbox, interval) == expected, (bbox, interval)


@pytest.mark.slow  # 9 s: the scale test; smaller catalogs check the same code in the default run
def test_a_10000_item_catalog_on_disk(tmp_path):
    """One generated catalog at the scale of the goals: read for ingest, then searched."""
    folder = write_catalog(tmp_path / "big", items=10_000, seed=7)
    files = read_local_catalog(folder)
    assert len(files.documents) == 10_002 and len(files.assets) == 10_000
    item = json.loads(dict(files.documents)["scenes/items/item-09999/item-09999.json"])
    assert item["assets"]["data"]["href"] == "./data.tif" and item["links"][0]["href"] == "../../../catalog.json"
    index = ItemIndex.from_folder(folder)
    items = [(p.relative_to(folder).as_posix(), json.loads(p.read_text()))
             for p in sorted((folder / "scenes" / "items").glob("*/*.json"))]
    assert index.search() == [path for path, _ in items] and len(items) == 10_000
    rng = random.Random(3)
    for _ in range(5):
        bbox, interval = random_query(rng)
        assert index.search(bbox, interval) == brute_force(items, bbox, interval)


@pytest.mark.parametrize("data", [b"", b"[]", b'{"stac_item_index": 99, "items": []}', b'{"stac_item_index": 1, "items": [1]}'])
def test_a_damaged_kept_index_is_refused(data):
    with pytest.raises(StacError, match="not an item index"):
        ItemIndex.from_bytes(data)


def test_search_reads_only_inside_the_folder(tmp_path):
    folder = write_catalog(tmp_path / "src", items=1)
    add_link(folder / "scenes" / "collection.json", {"rel": "item", "href": "../../x.json"})
    with pytest.raises(StacError, match="points outside"):
        ItemIndex.from_folder(folder)


def test_queries_are_parsed_as_the_stac_api_writes_them():
    assert parse_bbox("-10,35.5,30,60") == (-10, 35.5, 30, 60)
    assert parse_bbox("170,-10,-170,10") == (170, -10, -170, 10)  # across the antimeridian
    assert parse_interval("2020-01-01T00:00:00Z/..") == (_moment("2020-01-01T00:00:00Z"), math.inf)
    assert parse_interval("../2020-01-01T00:00:00Z") == (-math.inf, _moment("2020-01-01T00:00:00Z"))
    assert parse_interval("2020-01-01T00:00:00Z") == (_moment("2020-01-01T00:00:00Z"),) * 2


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "0,10,1,5", "0,0,inf,1", ""])
def test_bad_bboxes_are_refused(text):
    with pytest.raises(StacError, match="bbox"):
        parse_bbox(text)


@pytest.mark.parametrize("text", ["yesterday", "../..", "2021-01-01T00:00:00Z/2020-01-01T00:00:00Z", "a/b/c"])
def test_bad_intervals_are_refused(text):
    with pytest.raises(StacError, match="datetime"):
        parse_interval(text)
