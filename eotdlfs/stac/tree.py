"""A catalog as a tree of documents at paths of a version, and its self-contained form.

Self-contained is pystac's `CatalogType.SELF_CONTAINED`: no `self` link, every
structural link and every asset href relative, so the tree can be read from any place
it is copied to (the mount, a `get` folder) and every href resolves inside it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .rules import MAX_CATALOG_BYTES, STRUCTURAL_RELS, StacError, check_size, is_remote, relative_href


@dataclass
class Node:
    """One STAC document: where it lives in the version and what it says."""

    path: str                      # posix path inside the version
    stac: dict[str, Any]           # the object as read; its links and asset hrefs get rewritten
    parent: str | None             # path of the parent document; None for the root catalog
    assets: dict[str, str] = field(default_factory=dict)  # asset key -> file path inside the version
    local_links: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # (link, file path inside) kept


@dataclass(frozen=True)
class CatalogFiles:
    """What a STAC version is made of: its documents (rewritten) and its asset files."""

    name: str                             # the root catalog's id: the dataset's name
    documents: list[tuple[str, bytes]]    # (path, JSON bytes); catalog.json first
    assets: list[str]                     # paths of the asset files, each once, sorted
    items: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (path, item) as rewritten, to index


def kept_links(stac: dict[str, Any]) -> list[dict[str, Any]]:
    """Non-structural links that point somewhere else on the web (license, via, ...).

    Those to files of the version are the node's `local_links`; the others point at the
    uploader's disk, which no reader has.
    """
    return [link for link in stac.get("links") or []
            if isinstance(link, dict) and link.get("rel") not in STRUCTURAL_RELS
            and isinstance(link.get("href"), str) and is_remote(link["href"])]


def _link(rel: str, href: str, kind: str) -> dict[str, str]:
    return {"rel": rel, "href": href, "type": "application/geo+json" if kind == "Feature" else "application/json"}


def self_contained(nodes: list[Node], name: str) -> CatalogFiles:
    """Render NODES (root first) with relative links and asset hrefs, as JSON bytes."""
    by_path = {node.path: node for node in nodes}
    children: dict[str, list[Node]] = {}
    for node in nodes[1:]:
        children.setdefault(node.parent or "", []).append(node)
    root = nodes[0]
    documents, total, assets, items = [], 0, set(), []
    for node in nodes:
        links = [_link("root", relative_href(node.path, root.path), "Catalog")]
        parent = by_path[node.parent] if node.parent is not None else None
        in_collection = parent is not None and node.stac["type"] == "Feature" and parent.stac["type"] == "Collection"
        if parent is not None:
            links.append(_link("parent", relative_href(node.path, parent.path), parent.stac["type"]))
        if in_collection:
            links.append(_link("collection", relative_href(node.path, parent.path), "Collection"))
        for child in children.get(node.path, []):
            rel = "item" if child.stac["type"] == "Feature" else "child"
            links.append(_link(rel, relative_href(node.path, child.path), child.stac["type"]))
        local = [dict(link, href=relative_href(node.path, path)) for link, path in node.local_links]
        stac = dict(node.stac, links=links + kept_links(node.stac) + local)
        if in_collection:
            stac["collection"] = parent.stac["id"]
        if node.assets:
            stac["assets"] = {key: dict(stac["assets"][key], href=relative_href(node.path, path))
                              for key, path in node.assets.items()}
            assets.update(node.assets.values())
        data = json.dumps(stac, ensure_ascii=False).encode()  # no indent: the C encoder, 5x faster
        check_size(stac, len(data), node.path)
        total += len(data)
        if total > MAX_CATALOG_BYTES:
            raise StacError(f"the catalog's documents pass {MAX_CATALOG_BYTES} bytes")
        documents.append((node.path, data))
        if stac["type"] == "Feature":
            items.append((node.path, stac))
    clash = assets.intersection(by_path)
    if clash:
        raise StacError(f"{sorted(clash)[0]}: both an asset and a STAC document")
    return CatalogFiles(name=name, documents=documents, assets=sorted(assets), items=items)
