"""A staged STAC (Q1+) dataset, flushed by the rule `eotdlfs ingest` follows (`eotdlfs.stac.version`).

A staged record with `catalog.json` at its root is a STAC dataset: its catalog is read from
the staged files (staged bytes, or the published ones through the mount's reader) and
checked whole before anything is sent; the documents the version holds are the rewritten
ones and the item index, written into the record's staging folder (`stac/`) and shipped from
there, so after the flush the staged tree shows exactly the published version. Hrefs must
be relative paths to staged files: a staged tree has no "outside" a link could reach.
"""

from __future__ import annotations

import hashlib
import shutil

from eotdlfs.fs.staging.files import MADE_BY_FLUSH, StagedFile
from eotdlfs.fs.staging.overlay import StagingOverlay
from eotdlfs.metadata import METADATA_FILE, Metadata, check_metadata_size
from eotdlfs.stac import StacError, StoredSource
from eotdlfs.stac.local import read_catalog
from eotdlfs.stac.rules import MAX_DOCUMENT_BYTES, MAX_READ_BYTES, ROOT_DOCUMENT
from eotdlfs.stac.version import catalog_metadata, version_documents

SCRATCH = "stac"


def is_stac(shipped: list[StagedFile]) -> bool:
    return any(f.path == ROOT_DOCUMENT for f in shipped)


def stac_files(overlay: StagingOverlay, shipped: list[StagedFile]) -> tuple[Metadata, list[StagedFile]]:
    """The metadata and the files of the version SHIPPED (the frozen staged tree) makes."""
    by_path = {f.path: f for f in shipped}

    def read(path: str) -> bytes:
        staged = by_path.get(path)
        if staged is None:
            raise StacError(f"{path}: not a file of staging/{overlay.kind}/{overlay.name}")
        if staged.size > MAX_READ_BYTES:  # (`parse_document` checks what is read: one rule for flush and ingest)
            raise StacError(f"{path}: more than the {MAX_DOCUMENT_BYTES} bytes a STAC document may have")
        return overlay.read_staged(staged)

    catalog = read_catalog(StoredSource(read), by_path.__contains__, f"staging/{overlay.kind}/{overlay.name}")
    yml = by_path.get(METADATA_FILE)
    if yml is not None:
        check_metadata_size(yml.size)
    metadata = catalog_metadata(catalog, overlay.read_staged(yml) if yml is not None else None)
    scratch = overlay.folder / SCRATCH
    shutil.rmtree(scratch, ignore_errors=True)  # the last flush's copies: published, or to be made again
    for path, data in version_documents(catalog):
        checksum, old = hashlib.sha1(data).hexdigest(), by_path.get(path)
        if old is not None and old.checksum == checksum:
            continue  # a published document, already self-contained
        local = scratch / path
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
        # the staged file's key, so the flush's rebase makes the published copy its base file (a file
        # the flush made, the index, gets a node there)
        by_path[path] = StagedFile(path, len(data), checksum, local, old.key if old else f"{MADE_BY_FLUSH}{path}")
    return metadata, sorted(by_path.values(), key=lambda f: f.path)
