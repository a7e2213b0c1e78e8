"""The official 2023 `eotdl` client's STAC wire format, to and from our documents.

Its `ingest` PUTs `{"stac": FC}` to `datasets/stac/{id}`: FC is its STACDataFrame
(geopandas) as GeoJSON, one feature per Catalog, Collection and Item, feature `id`
the row number, every STAC field a property (`type` is "Catalog", "Collection" or
"Feature"; fields an object lacks are null), the item geometry as the feature's
geometry (null for catalogs and collections), links as pystac wrote them (an absolute
local `self`, the rest relative or absolute local paths) and each asset href
`{API}datasets/{id}/download/{filename}`, `filename` the uploaded file's base name.
Only the root catalog, its direct collections and their items are sent.

Its `get` reads that FC back from `GET datasets/{id}/download` and `to_stac` writes
NAME/catalog.json, NAME/COLL/collection.json and NAME/COLL/ITEM/ITEM.json, placing
each item by its `collection` property and copying links verbatim; `-a` downloads
each asset href (text after `/download/` = the local file name under assets/).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Collection
from typing import Any
from urllib.parse import unquote, urlsplit

from .rules import (MAX_ITEMS, ROOT_DOCUMENT, StacError, check_id, check_with_pystac,
                    relative_href, stac_kind)
from .tree import CatalogFiles, Node, kept_links, self_contained
from .walk import Source, walk


def _row_stac(feature: Any, index: int) -> dict[str, Any]:
    """The STAC object of one feature, without the dataframe's null columns."""
    where = f"feature {index}"
    if not isinstance(feature, dict) or not isinstance(feature.get("properties"), dict):
        raise StacError(f"{where}: a GeoJSON Feature with properties expected")
    stac = {k: v for k, v in feature["properties"].items() if v is not None}
    if "stac_id" in stac:  # rows that came out of EOTDL's GeoDB carry the STAC id there
        stac["id"] = stac.pop("stac_id")
    if stac_kind(stac, where) == "Feature":
        stac["geometry"] = feature.get("geometry")
    check_id(stac, f"{where} ({stac.get('type')})")
    return stac


def _asset_file(href: Any, dataset_id: str, asset_paths: Collection[str], what: str) -> str:
    prefix = f"datasets/{dataset_id}/download/"
    path = urlsplit(href).path if isinstance(href, str) else ""
    if prefix not in path:
        raise StacError(f"{what}: href {href!r} is not a file uploaded to this dataset "
                        f"(…/{prefix}FILENAME); was the upload interrupted?")
    filename = unquote(path.split(prefix, 1)[1])
    if filename not in asset_paths:
        raise StacError(f"{what}: {filename!r} is not a file of this version")
    return filename


def _link_target(stac: dict[str, Any], rel: str, base: str | None) -> str | None:
    """Where STAC's first REL link points, made absolute against BASE (the uploader's self href)."""
    for link in stac.get("links") or []:
        if isinstance(link, dict) and link.get("rel") == rel and isinstance(link.get("href"), str):
            href = link["href"]
            if not (href.startswith("/") or "://" in href):
                if base is None:
                    return None
                href = posixpath.join(posixpath.dirname(base), href)
            return posixpath.normpath(href)
    return None


def _items_of_collections(rows: list[dict[str, Any]], collections: dict[str, str]) -> dict[str, str]:
    """Item self href -> collection path, from the collections' `item` links.

    The official client took the items from `collection.get_items()`, so these links are
    the relation it meant; an item's own `collection` field is often missing.
    """
    found = {}
    for stac in rows:
        if stac["type"] != "Collection":
            continue
        base = _link_target(stac, "self", None)
        for link in stac.get("links") or []:
            if isinstance(link, dict) and link.get("rel") == "item":
                target = _link_target({"links": [link]}, "item", base)
                if target is not None:
                    found[target] = collections[stac["id"]]
    return found


def feature_collection_to_documents(fc: Any, dataset_id: str, asset_paths: Collection[str]) -> CatalogFiles:
    """The self-contained documents of what the official client PUT for DATASET_ID.

    ASSET_PATHS are the files of the version; every asset must name one of them. The
    layout is pystac's (and the official `to_stac`'s): catalog.json, COLL/collection.json,
    COLL/ITEM/ITEM.json; items without a collection at ITEM/ITEM.json.
    """
    if not isinstance(fc, dict) or fc.get("type") != "FeatureCollection" or not isinstance(fc.get("features"), list):
        raise StacError("'stac' must be a GeoJSON FeatureCollection")
    rows = [_row_stac(feature, i) for i, feature in enumerate(fc["features"])]
    if sum(stac["type"] == "Feature" for stac in rows) > MAX_ITEMS:
        raise StacError(f"more than {MAX_ITEMS} items: the most a STAC dataset may have")
    catalogs = [s for s in rows if s["type"] == "Catalog"]
    if len(catalogs) != 1:
        raise StacError(f"exactly one Catalog expected (the dataset's root), got {len(catalogs)}")
    collections = {}
    for stac in rows:
        if stac["type"] == "Collection":
            if stac["id"] in collections:
                raise StacError(f"two collections with id {stac['id']!r}")
            collections[stac["id"]] = f"{stac['id']}/collection.json"
    root = Node(path=ROOT_DOCUMENT, stac=catalogs[0], parent=None)
    nodes = [root] + [Node(path=path, stac=stac, parent=ROOT_DOCUMENT)
                      for stac in rows if stac["type"] == "Collection"
                      for path in [collections[stac["id"]]]]
    seen = {node.path for node in nodes}
    item_collection = _items_of_collections(rows, collections)
    for stac in rows:
        if stac["type"] != "Feature":
            continue
        parent = item_collection.get(_link_target(stac, "self", None))
        if parent is None and stac.get("collection") is not None:
            parent = collections.get(stac["collection"])
            if parent is None:
                raise StacError(f"item {stac['id']!r}: collection {stac['collection']!r} is not in the catalog")
        parent = parent or ROOT_DOCUMENT
        folder = parent.rsplit("/", 1)[0] + "/" if parent != ROOT_DOCUMENT else ""
        path = f"{folder}{stac['id']}/{stac['id']}.json"
        if path in seen:
            raise StacError(f"two items with id {stac['id']!r} in the same collection")
        seen.add(path)
        nodes.append(Node(path=path, stac=stac, parent=parent))
    for node in nodes:
        what = f"{node.stac['type']} {node.stac['id']!r}"
        check_with_pystac(node.stac, what)
        for key, asset in (node.stac.get("assets") or {}).items():
            href = asset.get("href") if isinstance(asset, dict) else None
            node.assets[key] = _asset_file(href, dataset_id, asset_paths, f"{what}: asset {key!r}")
    return self_contained(nodes, root.stac["id"])


def documents_to_feature_collection(source: Source, download_url: Callable[[str], str]) -> dict[str, Any]:
    """The FeatureCollection the official `get` rebuilds a version's catalog from.

    SOURCE reads the version's published documents; DOWNLOAD_URL turns the path of an
    asset file into its `{API}datasets/{id}/download/{path}` URL. Links are the ones
    `to_stac`'s layout needs (it writes them verbatim); collections below sub-catalogs
    are flattened to the root as `to_stac` places them.
    """
    nodes = walk(source)
    kind = {node.path: node.stac["type"] for node in nodes}
    ids = {node.path: node.stac["id"] for node in nodes}
    by_path = {node.path: node for node in nodes}
    rows = ([n for n in nodes if n.stac["type"] == "Catalog"][:1]
            + [n for n in nodes if n.stac["type"] == "Collection"]
            + [n for n in nodes if n.stac["type"] == "Feature"])
    up = {node.path: _to_stac_parent(node, kind) for node in rows}
    children: dict[str, list[Node]] = {}
    for node in rows[1:]:
        children.setdefault(up[node.path], []).append(node)
    features = []
    for index, node in enumerate(rows):
        stac, layout, parent = dict(node.stac), _to_stac_path(node, kind, ids), up[node.path]
        links = [{"rel": "root", "href": relative_href(layout, ROOT_DOCUMENT), "type": "application/json"}]
        if parent is not None:
            parent_href = relative_href(layout, _to_stac_path(by_path[parent], kind, ids))
            links.append({"rel": "parent", "href": parent_href, "type": "application/json"})
            if kind[parent] == "Collection":
                links.append({"rel": "collection", "href": parent_href, "type": "application/json"})
                stac["collection"] = ids[parent]
        for child in children.get(node.path, []):
            rel = "item" if child.stac["type"] == "Feature" else "child"
            links.append({"rel": rel, "href": relative_href(layout, _to_stac_path(child, kind, ids)),
                          "type": "application/json"})
        stac["links"] = links + kept_links(node.stac)
        if isinstance(stac.get("assets"), dict):
            stac["assets"] = {key: dict(asset, href=download_url(source.target(
                node.path, asset.get("href", ""), f"{node.path}: asset {key!r}")))
                for key, asset in stac["assets"].items()}
        geometry = stac.pop("geometry", None)
        features.append({"id": str(index), "type": "Feature", "properties": stac, "geometry": geometry})
    return {"type": "FeatureCollection", "features": features}


def _to_stac_parent(node: Node, kind: dict[str, str]) -> str | None:
    """The row `to_stac` puts NODE under: an item's collection, else the root catalog."""
    if node.parent is None:
        return None
    if node.stac["type"] == "Feature" and kind[node.parent] == "Collection":
        return node.parent
    return ROOT_DOCUMENT


def _to_stac_path(node: Node, kind: dict[str, str], ids: dict[str, str]) -> str:
    """Where the official `to_stac` writes NODE, relative to its NAME/ folder."""
    stac_id = node.stac["id"]
    if node.parent is None:
        return ROOT_DOCUMENT
    if node.stac["type"] != "Feature":
        return f"{stac_id}/collection.json"
    folder = f"{ids[node.parent]}/" if kind[node.parent] == "Collection" else ""
    return f"{folder}{stac_id}/{stac_id}.json"
