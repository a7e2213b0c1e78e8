"""Walking a catalog's documents from its root, link by link, within bounds.

The walk is ours, not pystac's: pystac would follow a `child` link anywhere (another
disk path, the network) and loops forever on a link cycle. Here every link must
resolve inside the catalog's folder (the `Source` decides how), each document is
read once (a second link to it is a cycle or a second parent), and the item count,
document sizes and total bytes are bounded before anything is held.
"""

from __future__ import annotations

import posixpath
from collections import deque
from collections.abc import Callable
from typing import Protocol

from .rules import MAX_CATALOG_BYTES, MAX_ITEMS, ROOT_DOCUMENT, StacError, is_remote, parse_document
from .tree import Node


class Source(Protocol):
    """Where the documents come from: a folder on disk, or the stored files of a version."""

    def read(self, path: str) -> bytes:
        """The bytes of the document at PATH (inside the catalog); StacError if unreadable."""

    def target(self, document: str, href: str, what: str) -> str:
        """The path inside the catalog that HREF in DOCUMENT names; StacError if it leaves it."""


class StoredSource:
    """The published files of a version, read by path: hrefs there are relative by construction."""

    def __init__(self, read: Callable[[str], bytes]):
        self.read = read

    def target(self, document: str, href: str, what: str) -> str:
        path = posixpath.normpath(posixpath.join(posixpath.dirname(document), href))
        if is_remote(href) or href.startswith(("/", "file:")) or path == "." or path.startswith("../") or path == "..":
            raise StacError(f"{what}: href {href!r} does not name a file of the version")
        return path


def walk(source: Source) -> list[Node]:
    """Every document reachable from catalog.json, root first, parents before children."""
    nodes: list[Node] = []
    queue: deque[tuple[str, str | None, str]] = deque([(ROOT_DOCUMENT, None, "root")])
    seen, items, total = {ROOT_DOCUMENT}, 0, 0
    while queue:
        path, parent, rel = queue.popleft()
        try:
            data = source.read(path)
        except StacError as exc:
            if parent is None:
                raise
            raise StacError(f"{parent}: {rel} link to {exc}") from None  # the document to edit
        total += len(data)
        if total > MAX_CATALOG_BYTES:
            raise StacError(f"the catalog's documents pass {MAX_CATALOG_BYTES} bytes")
        stac = parse_document(data, path)
        expected = {"root": ("Catalog",), "child": ("Catalog", "Collection"), "item": ("Feature",)}[rel]
        if stac["type"] not in expected:
            raise StacError(f"{path}: a {rel} document must be a {' or '.join(expected)}, got {stac['type']}")
        nodes.append(Node(path=path, stac=stac, parent=parent))
        if stac["type"] == "Feature":
            continue  # an item's links (parent, root, collection) lead back up, never down
        for link in stac.get("links") or []:
            link_rel = link.get("rel") if isinstance(link, dict) else None
            if link_rel not in ("child", "item"):
                continue
            href = link.get("href")
            if not isinstance(href, str):
                raise StacError(f"{path}: a {link_rel} link without an href")
            child = source.target(path, href, f"{path}: {link_rel} link")
            if child in seen:
                raise StacError(f"{path}: {link_rel} link to {child}, already in the catalog "
                                "(a link cycle or a second parent)")
            seen.add(child)
            if link_rel == "item":
                items += 1
                if items > MAX_ITEMS:
                    raise StacError(f"more than {MAX_ITEMS} items: the most a STAC dataset may have")
            queue.append((child, path, link_rel))
    return nodes
