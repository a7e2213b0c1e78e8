"""A STAC (Q1+) dataset folder as the files of a version: the catalog's documents, its assets, metadata.

A folder with `catalog.json` at its root is a STAC dataset (as in the official client):
- its files are the catalog, collection and item documents, rewritten self-contained
  (relative hrefs, no `self`: `eotdlfs.stac.read_local_catalog`), at their paths in the
  folder; every asset at its path in the folder; and `metadata.yml` when there is one.
  Other files of the folder are not part of the version. Rewritten documents are written
  to a scratch folder and uploaded from there; the user's folder is never modified;
- the name is the root catalog's `id`; authors, license and source come from an optional
  `metadata.yml` beside `catalog.json` (its `name`, if given, must be that id), else from
  the catalog: `license` of the root catalog or of a collection below it, `providers`'
  names as authors, and as source the first http(s) link (`about`, `via`, `cite-as`,
  `describedby`, `license`) or provider `url`;
- every rule (`eotdlfs.stac`: hrefs inside the folder, no remote assets, no cycles, sizes,
  item count) is checked before the repository is asked anything.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import yaml

from eotdlfs.client.hashcache import HashCache
from eotdlfs.client.ingest.plan import SourceFile
from eotdlfs.metadata import METADATA_FILE, Metadata, MetadataError, validate_name
from eotdlfs.stac import CatalogFiles, read_local_catalog
from eotdlfs.stac.search import INDEX_FILE, ItemIndex
from eotdlfs.stac.rules import MAX_DOCUMENT_BYTES, ROOT_DOCUMENT, StacError, parse_document

SOURCE_RELS = ("about", "via", "cite-as", "describedby", "license")


def is_stac_folder(folder: Path) -> bool:
    return (Path(folder) / ROOT_DOCUMENT).is_file()


def catalog_name(folder: Path) -> str:
    """The dataset name of the STAC folder FOLDER (its root catalog's id), read cheaply for messages;
    `stac_sources` checks the whole catalog."""
    try:
        data = (Path(folder) / ROOT_DOCUMENT).read_bytes()[:MAX_DOCUMENT_BYTES + 1]
    except OSError as exc:
        raise StacError(f"{ROOT_DOCUMENT}: cannot be read ({exc.strerror})") from None
    return validate_name(parse_document(data, ROOT_DOCUMENT).get("id"))


def stac_sources(folder: Path, cache: HashCache, scratch: Path) -> tuple[Metadata, list[SourceFile]]:
    """The metadata and files of the STAC dataset in FOLDER; rewritten documents go to SCRATCH."""
    catalog = read_local_catalog(folder)
    metadata = stac_metadata(folder, catalog)
    sources = document_sources(catalog, scratch)
    root = os.path.realpath(folder)
    wanted = sorted(set(catalog.assets) | ({METADATA_FILE} if (Path(folder) / METADATA_FILE).is_file() else set()))
    real = {path: os.path.realpath(os.path.join(folder, path)) for path in wanted}
    stats = {path: os.stat(real[path]) for path in wanted}
    keys = {path: (real[path], stats[path].st_size, stats[path].st_mtime_ns) for path in wanted}
    digests = cache.digests(list(keys.values()), under=root)
    sources += [SourceFile(path, keys[path][1], digests[keys[path]], Path(real[path])) for path in wanted]
    return metadata, sorted(sources, key=lambda s: s.path)


def document_sources(catalog: CatalogFiles, scratch: Path) -> list[SourceFile]:
    """The rewritten documents of CATALOG and its item index (`eotdlfs stac search`) as files under
    SCRATCH, with their SHA-1s."""
    sources = []
    made: set[str] = set()
    index = (INDEX_FILE, ItemIndex.from_documents(catalog.documents).to_bytes())
    for path, data in [*catalog.documents, index]:
        local = os.path.join(scratch, path)
        parent = os.path.dirname(local)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        with open(local, "wb") as out:
            out.write(data)
        sources.append(SourceFile(path, len(data), hashlib.sha1(data).hexdigest(), Path(local)))
    return sources


def stac_metadata(folder: Path, catalog: CatalogFiles) -> Metadata:
    """The record's metadata: metadata.yml beside catalog.json, else what the catalog says."""
    given = _metadata_yml(Path(folder) / METADATA_FILE)
    if given is not None:
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


def _metadata_yml(path: Path) -> dict[str, Any] | None:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise MetadataError(METADATA_FILE, f"is not valid YAML text ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise MetadataError(METADATA_FILE, "must be a mapping of authors, license, source")
    return data


def _from_catalog(catalog: CatalogFiles) -> dict[str, Any]:
    """License, authors and source from the root catalog and the collections it links to directly."""
    documents = dict(catalog.documents)
    root = json.loads(documents[ROOT_DOCUMENT])
    objects = [root]
    for link in root.get("links", []):
        if link.get("rel") == "child":
            child = os.path.normpath(link["href"])  # relative to the root, by construction
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
