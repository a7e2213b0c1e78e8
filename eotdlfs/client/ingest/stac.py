"""A STAC (Q1+) dataset folder as the files of a version (the rule: `eotdlfs.stac.version`).

A folder with `catalog.json` at its root is a STAC dataset, as in the official client. Its
catalog is read and checked whole (`eotdlfs.stac.read_local_catalog`: hrefs inside the
folder, no remote assets, no cycles, sizes, item count) before the repository is asked
anything; the rewritten documents and the item index are written to a scratch folder and
uploaded from there, so the user's folder is never modified.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from eotdlfs.client.hashcache import HashCache
from eotdlfs.client.ingest.plan import SourceFile
from eotdlfs.client.ingest.sources import scan_folder
from eotdlfs.metadata import METADATA_FILE, Metadata, validate_name
from eotdlfs.stac import read_local_catalog
from eotdlfs.stac.rules import MAX_DOCUMENT_BYTES, ROOT_DOCUMENT, StacError, parse_document
from eotdlfs.stac.version import catalog_metadata, version_documents


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
    yml = Path(folder) / METADATA_FILE
    metadata = catalog_metadata(catalog, yml.read_bytes() if yml.is_file() else None)
    documents = written(version_documents(catalog), scratch)
    return metadata, sorted([s for s in scan_folder(folder, cache) if s.path not in documents]
                            + list(documents.values()), key=lambda s: s.path)


def written(documents: list[tuple[str, bytes]], scratch: Path) -> dict[str, SourceFile]:
    """DOCUMENTS as files under SCRATCH, by path, with their SHA-1s."""
    sources = {}
    made: set[str] = set()
    for path, data in documents:
        local = os.path.join(scratch, path)
        parent = os.path.dirname(local)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        with open(local, "wb") as out:
            out.write(data)
        sources[path] = SourceFile(path, len(data), hashlib.sha1(data).hexdigest(), Path(local))
    return sources
