"""A STAC (Q1+) dataset folder as the files of a version (the rule: `eotdlfs.stac.version`).

A folder with `catalog.json` at its root is a STAC dataset, as in the official client. Its
catalog is read and checked whole (`eotdlfs.stac.read_local_catalog`: hrefs inside the
folder, no remote assets, no cycles, sizes, item count) before the repository is asked
anything; the rewritten documents and the item index are kept in the user cache dir
(`stac-documents/NAME/SHA1`, one copy of the current documents per dataset) and uploaded
from there, so the user's folder is never modified.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from eotdlfs.cachedir import user_cache_dir
from eotdlfs.client.hashcache import HashCache, private_folder
from eotdlfs.client.ingest.plan import SourceFile
from eotdlfs.client.ingest.sources import scan_folder
from eotdlfs.metadata import METADATA_FILE, Metadata, check_metadata_size, validate_name
from eotdlfs.stac import read_local_catalog
from eotdlfs.stac.rules import MAX_READ_BYTES, ROOT_DOCUMENT, StacError, parse_document
from eotdlfs.stac.version import catalog_metadata, version_documents


def is_stac_folder(folder: Path) -> bool:
    return (Path(folder) / ROOT_DOCUMENT).is_file()


def catalog_name(folder: Path) -> str:
    """The dataset name of the STAC folder FOLDER (its root catalog's id), read cheaply for messages;
    `stac_sources` checks the whole catalog."""
    try:
        with open(Path(folder) / ROOT_DOCUMENT, "rb") as f:
            data = f.read(MAX_READ_BYTES + 1)  # (a bigger one is refused by `parse_document`, unread)
    except OSError as exc:
        raise StacError(f"{ROOT_DOCUMENT}: cannot be read ({exc.strerror})") from None
    return validate_name(parse_document(data, ROOT_DOCUMENT).get("id"))


def stac_sources(folder: Path, cache: HashCache, kept_in: Path | None = None) -> tuple[Metadata, list[SourceFile]]:
    """The metadata and files of the STAC dataset in FOLDER; rewritten documents are kept in KEPT_IN
    (default: `documents_dir` of the dataset). The documents as found are neither read nor hashed."""
    catalog = read_local_catalog(folder)
    yml = Path(folder) / METADATA_FILE
    if yml.is_file():
        check_metadata_size(yml.stat().st_size)
    metadata = catalog_metadata(catalog, yml.read_bytes() if yml.is_file() else None)
    documents = written(version_documents(catalog), kept_in or documents_dir(catalog.name))
    return metadata, sorted(scan_folder(folder, cache, skip=documents) + list(documents.values()),
                            key=lambda s: s.path)


def documents_dir(name: str) -> Path:
    """Where the rewritten documents of dataset NAME are kept between ingests, by SHA-1."""
    return user_cache_dir() / "stac-documents" / name


def written(documents: list[tuple[str, bytes]], folder: Path) -> dict[str, SourceFile]:
    """DOCUMENTS as files in FOLDER named by their SHA-1, by path.

    Named by content, a document kept from the last ingest is not written again: a re-ingest
    of 10,000 items with one asset changed writes nothing (writing 10,000 small files costs
    seconds). Files of documents no longer wanted are removed.
    """
    private_folder(folder)
    present = set(os.listdir(folder))
    sources = {}
    for path, data in documents:
        digest = hashlib.sha1(data).hexdigest()
        local = folder / digest
        if digest not in present:
            partial = folder / f".{digest}.part"
            partial.write_bytes(data)
            os.replace(partial, local)  # a file named by a digest always holds those bytes
            present.add(digest)
        sources[path] = SourceFile(path, len(data), digest, local)
    for stale in present - {s.checksum for s in sources.values()}:
        (folder / stale).unlink(missing_ok=True)
    return sources
