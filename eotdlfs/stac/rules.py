"""The rules every STAC (Q1+) catalog obeys here: limits, JSON documents, object kinds, ids.

Client (ingest), server (PUT and publish) and search share them, so a catalog the
client accepts is one the server accepts; each error names the document or object.
"""

from __future__ import annotations

import json
from typing import Any

# A real item is 2-20 KB; a collection with summaries rarely passes 100 KB. A bigger
# document is a property blob that would be held in memory for every reader.
MAX_DOCUMENT_BYTES = 1 << 20
# A catalog's or collection's links grow with its children (100,000 item links are ~10 MB):
# they may add this much; its own fields still get MAX_DOCUMENT_BYTES.
MAX_LINKS_BYTES = 64 << 20
MAX_READ_BYTES = MAX_DOCUMENT_BYTES + MAX_LINKS_BYTES  # the most of a document ever read
# At least 100,000 (issue 15); the documents of this many items (~3 KB each) fit in memory.
MAX_ITEMS = 100_000
MAX_CATALOG_BYTES = 512 << 20

ROOT_DOCUMENT = "catalog.json"
# Links that make the tree; they are rewritten, every other link is kept only if remote.
STRUCTURAL_RELS = frozenset({"self", "root", "parent", "child", "item", "collection"})
KINDS = ("Catalog", "Collection", "Feature")


class StacError(ValueError):
    """The catalog breaks a rule; the message names the document or object and the rule.

    The server answers it with a 4xx, the client prints it and uploads nothing.
    """


def parse_document(data: bytes, where: str) -> dict[str, Any]:
    """One STAC JSON document: size-checked, valid JSON, an object with a known type."""
    if len(data) > MAX_READ_BYTES:
        raise StacError(f"{where}: {len(data)} bytes, more than the {MAX_DOCUMENT_BYTES} a STAC document may have")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise StacError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise StacError(f"{where}: a STAC document must be a JSON object")
    stac_kind(obj, where)
    check_size(obj, len(data), where)
    return obj


def check_size(obj: dict[str, Any], size: int, where: str) -> None:
    """OBJ, SIZE bytes as JSON, within MAX_DOCUMENT_BYTES apart from a catalog's or collection's links."""
    if size <= MAX_DOCUMENT_BYTES:
        return
    if obj.get("type") != "Feature" and size <= MAX_READ_BYTES:
        own = {k: v for k, v in obj.items() if k != "links"}
        if len(json.dumps(own, ensure_ascii=False).encode()) <= MAX_DOCUMENT_BYTES:
            return
    raise StacError(f"{where}: {size} bytes, more than the {MAX_DOCUMENT_BYTES} a STAC document may have")


def stac_kind(obj: dict[str, Any], where: str) -> str:
    kind = obj.get("type")
    if kind not in KINDS:
        raise StacError(f"{where}: 'type' must be one of {', '.join(KINDS)}, got {kind!r}")
    return kind


def check_id(obj: dict[str, Any], where: str) -> str:
    """An id that can name a folder or file: the layouts here put ids into paths."""
    stac_id = obj.get("id")
    if (not isinstance(stac_id, str) or stac_id in ("", ".", "..") or "/" in stac_id
            or "\\" in stac_id or "\x00" in stac_id or len(stac_id) > 255):
        raise StacError(f"{where}: id {stac_id!r} must be a non-empty name without '/' (at most 255 characters)")
    return stac_id


def check_with_pystac(obj: dict[str, Any], where: str) -> None:
    """Refuse what pystac would refuse to read (missing description, extent, properties...)."""
    import pystac  # here: the mount imports these rules, and pystac would add 13 MB to its memory

    reader = {"Catalog": pystac.Catalog, "Collection": pystac.Collection, "Feature": pystac.Item}[obj["type"]]
    bare = {k: v for k, v in obj.items() if k != "links"}
    bare["links"] = []
    try:
        reader.from_dict(bare, migrate=False, preserve_dict=False)
    except Exception as exc:  # pystac raises KeyError, TypeError, ValueError, STACError...
        raise StacError(f"{where}: not a valid STAC {obj['type']} ({exc.__class__.__name__}: {exc})") from None


def relative_href(from_document: str, to_path: str) -> str:
    """The href a document at FROM_DOCUMENT uses for TO_PATH, both paths inside the version."""
    # posixpath.relpath would do, but it makes both paths absolute first: 30 us per href
    here, there = from_document.split("/")[:-1], to_path.split("/")
    common = 0
    while common < len(here) and common < len(there) - 1 and here[common] == there[common]:
        common += 1
    ups = len(here) - common
    return "../" * ups + "/".join(there[common:]) if ups else "./" + "/".join(there[common:])


def is_remote(href: str) -> bool:
    scheme = href.split(":", 1)[0].lower() if ":" in href else ""
    return len(scheme) > 1 and scheme != "file" and "/" not in scheme
