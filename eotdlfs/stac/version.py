"""What a STAC (Q1+) version is made of, whoever makes it (`eotdlfs ingest`, a staging flush).

- Every file of the dataset folder, as for a Q0 dataset, except that the catalog, collection
  and item documents are their self-contained rewrites (relative hrefs, no `self`), plus the
  item index `.stac-index.json` (`eotdlfs stac search` reads it instead of every item).
- The name is the root catalog's `id`. Authors, license and source come from an optional
  `metadata.yml` beside `catalog.json` (its `name`, if given, must be that id), else from the
  catalog: `license` of the root catalog or of a collection it links to, the `providers`'
  names as authors, and as source the first http(s) link (`about`, `via`, `cite-as`,
  `describedby`, `license`), else a provider's `url`.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

import yaml

from ..metadata import METADATA_FILE, Metadata, MetadataError
from .rules import ROOT_DOCUMENT
from .tree import CatalogFiles

SOURCE_RELS = ("about", "via", "cite-as", "describedby", "license")


def version_documents(catalog: CatalogFiles) -> list[tuple[str, bytes]]:
    """The JSON files the version holds in place of the folder's: the rewritten documents and the item index."""
    # here: the mount imports this module for its flushes, and the index's numpy and shapely
    # would add 25 MB to its memory whether it flushes a STAC version or not
    from .search import INDEX_FILE, ItemIndex

    return [*catalog.documents, (INDEX_FILE, ItemIndex.from_items(catalog.items).to_bytes())]


def catalog_metadata(catalog: CatalogFiles, metadata_yml: bytes | None) -> Metadata:
    """The record's metadata: METADATA_YML (the bytes of metadata.yml beside catalog.json, if any),
    else what the catalog says."""
    if metadata_yml is not None:
        given = _parse_yml(metadata_yml)
        if given.get("name") not in (None, catalog.name):
            raise MetadataError("name", f"{given['name']!r} in {METADATA_FILE} differs from the catalog id "
                                f"{catalog.name!r}, the dataset's name in a STAC folder (drop it or make them equal)")
        return Metadata.from_mapping(dict(given, name=catalog.name))
    found = _from_catalog(catalog)
    missing = [f for f in ("authors", "license", "source") if not found.get(f)]
    if missing:
        raise MetadataError(missing[0], f"not found in the catalog (`license`, `providers`, an http link): put "
                            f"authors, license and source in a {METADATA_FILE} beside {ROOT_DOCUMENT}")
    return Metadata.from_mapping(dict(found, name=catalog.name))


def _parse_yml(data: bytes) -> dict[str, Any]:
    try:
        parsed = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise MetadataError(METADATA_FILE, f"is not valid YAML text ({exc.__class__.__name__})") from None
    if not isinstance(parsed, dict):
        raise MetadataError(METADATA_FILE, "must be a mapping of authors, license, source")
    return parsed


def _from_catalog(catalog: CatalogFiles) -> dict[str, Any]:
    """License, authors and source from the root catalog and the collections it links to directly."""
    documents = dict(catalog.documents)
    root = json.loads(documents[ROOT_DOCUMENT])
    objects = [root]
    for link in root.get("links", []):
        child = posixpath.normpath(link["href"]) if link.get("rel") == "child" else None  # relative by construction
        if child in documents:
            objects.append(json.loads(documents[child]))
    found: dict[str, Any] = {"authors": []}
    for stac in objects:
        if not found.get("license") and isinstance(stac.get("license"), str):
            found["license"] = stac["license"]
        for link in stac.get("links") or []:
            if (not found.get("source") and link.get("rel") in SOURCE_RELS
                    and str(link.get("href", "")).startswith("http")):
                found["source"] = link["href"]
        for provider in stac.get("providers") or []:
            if not isinstance(provider, dict):
                continue
            if isinstance(provider.get("name"), str) and provider["name"] not in found["authors"]:
                found["authors"].append(provider["name"])
            if not found.get("source") and str(provider.get("url", "")).startswith("http"):
                found["source"] = provider["url"]
    return found
