"""STAC dataset folders for the tests, written as plain JSON (fast enough for 10,000 items)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

EXTENT = {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}}


def catalog_doc(stac_id: str, links: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "Catalog", "id": stac_id, "stac_version": "1.0.0", "description": "test", "links": links}


def collection_doc(stac_id: str, links: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "Collection", "id": stac_id, "stac_version": "1.0.0", "description": "test",
            "license": "CC-BY-4.0", "extent": EXTENT, "links": links}


def item_doc(stac_id: str, bbox: list[float], when: str, assets: dict[str, str]) -> dict[str, Any]:
    west, south, east, north = bbox
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return {"type": "Feature", "stac_version": "1.0.0", "id": stac_id,
            "geometry": {"type": "Polygon", "coordinates": [ring]}, "bbox": bbox,
            "properties": {"datetime": when}, "links": [],
            "assets": {key: {"href": href, "type": "image/tiff"} for key, href in assets.items()}}


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def write_catalog(folder: Path, items: int = 3, name: str = "stac-test", seed: int = 1,
                  asset: str = "data.tif") -> Path:
    """catalog.json -> scenes/collection.json -> scenes/items/ID/ID.json with one asset ID/ASSET each.

    Items get random small boxes over the globe and random days of 2020-2021. ASSET "{id}.tif"
    gives every asset its own base name (the official client uploads assets by base name).
    """
    rng = random.Random(seed)
    ids = [f"item-{i:05d}" for i in range(items)]
    write_json(folder / "catalog.json", catalog_doc(name, [
        {"rel": "root", "href": "./catalog.json"}, {"rel": "child", "href": "./scenes/collection.json"}]))
    write_json(folder / "scenes" / "collection.json", collection_doc("scenes", [
        {"rel": "root", "href": "../catalog.json"}, {"rel": "parent", "href": "../catalog.json"},
        *({"rel": "item", "href": f"./items/{i}/{i}.json"} for i in ids)]))
    for stac_id in ids:
        west, south = rng.uniform(-180, 175), rng.uniform(-90, 85)
        bbox = [west, south, west + rng.uniform(0.01, 5), south + rng.uniform(0.01, 5)]
        when = f"{rng.choice((2020, 2021))}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T12:00:00Z"
        item_folder = folder / "scenes" / "items" / stac_id
        asset_name = asset.format(id=stac_id)
        write_json(item_folder / f"{stac_id}.json", item_doc(stac_id, bbox, when, {"data": f"./{asset_name}"}))
        (item_folder / asset_name).write_bytes(stac_id.encode())
    return folder


def hostile(folder: Path, href: str, where: str = "asset") -> Path:
    """A one-item catalog whose asset href (or, WHERE="link", an extra item link of its collection) is HREF."""
    write_catalog(folder, items=1)
    item = folder / "scenes" / "items" / "item-00000" / "item-00000.json"
    doc = json.loads(item.read_text())
    if where == "asset":
        doc["assets"]["data"]["href"] = href
        write_json(item, doc)
    else:
        add_link(folder / "scenes" / "collection.json", {"rel": "item", "href": href})
    return folder


def add_link(document: Path, link: dict) -> None:
    doc = json.loads(document.read_text())
    doc["links"].append(link)
    write_json(document, doc)


def add_cog_asset(folder: Path, item: str = "item-00000", side: int = 512, href: str = "./scene.tif") -> Path:
    """Give ITEM of write_catalog's catalog a tiled Cloud-Optimised GeoTIFF asset `cog`: ITEM/scene.tif, as HREF."""
    import numpy as np
    import rasterio
    from affine import Affine

    item_folder = folder / "scenes" / "items" / item
    data = np.random.default_rng(3).integers(0, 10_000, size=(side, side), dtype=np.uint16)
    with rasterio.open(item_folder / "scene.tif", "w", driver="COG", width=side, height=side, count=1,
                       dtype="uint16", blocksize=256, crs="EPSG:4326",
                       transform=Affine(0.001, 0, 0, 0, -0.001, 0)) as dst:
        dst.write(data, 1)
    document = item_folder / f"{item}.json"
    doc = json.loads(document.read_text())
    doc["assets"]["cog"] = {"href": href.format(folder=item_folder), "type": "image/tiff; application=geotiff; profile=cloud-optimized"}
    write_json(document, doc)
    return item_folder / "scene.tif"
