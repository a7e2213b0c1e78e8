"""A STAC (Q1+) dataset folder on disk: what `eotdlfs ingest` uploads as a version.

The catalog is checked whole (every asset a file inside the folder) and its catalog,
collection and item documents rewritten self-contained, at their paths in the folder.

Remote asset hrefs (http, https, s3, ...) are refused: a version is checksummed
files that cannot change or vanish, and a mount or `get` folder must resolve every
href inside itself. Download the asset into the folder and point the href at it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ..metadata import MetadataError, validate_name
from ..paths import RefusedSymlink, is_under, resolve_inside
from .rules import (MAX_DOCUMENT_BYTES, MAX_READ_BYTES, ROOT_DOCUMENT, STRUCTURAL_RELS, StacError, check_id,
                    check_with_pystac, is_remote)
from .tree import CatalogFiles, self_contained
from .walk import Source, walk


class FolderSource:
    """Documents and assets of a folder; no href may lead out of it, by path or by symlink.

    Paths are plain strings and each folder's real path is worked out once: a catalog of
    100,000 items is 200,000 hrefs, and pathlib's resolve() per href costs seconds.
    """

    def __init__(self, folder: Path):
        self.folder = os.path.abspath(folder)
        self._real_dirs = {self.folder: os.path.realpath(self.folder)}

    def path(self, rel: str) -> str:
        return os.path.join(self.folder, rel)

    def read(self, path: str) -> bytes:
        file = self.path(path)
        try:
            if path == ROOT_DOCUMENT and not self._inside(file):
                raise RefusedSymlink(f"{file} is outside")
        except RefusedSymlink as exc:
            raise StacError(f"{path}: a link out of {self.folder} ({exc})") from None
        try:
            with open(file, "rb") as f:
                data = f.read(MAX_READ_BYTES + 1)
        except FileNotFoundError:
            raise StacError(f"{path}: not found in {self.folder}") from None
        except IsADirectoryError:
            raise StacError(f"{path}: a folder, not a STAC document") from None
        except OSError as exc:
            raise StacError(f"{path}: cannot be read ({exc.strerror})") from None
        if len(data) > MAX_READ_BYTES:
            raise StacError(f"{path}: more than the {MAX_DOCUMENT_BYTES} bytes a STAC document may have")
        return data

    def target(self, document: str, href: str, what: str) -> str:
        if is_remote(href):
            raise StacError(f"{what}: remote href {href!r}; only files inside {self.folder} can be part of a dataset")
        if href.lower().startswith("file:"):
            href = unquote(urlsplit(href).path)
        base = os.path.dirname(self.path(document))
        lexical = os.path.normpath(os.path.join(base, href))  # an absolute href replaces base
        try:
            inside = is_under(lexical, self.folder) and lexical != self.folder and self._inside(lexical)
        except RefusedSymlink as exc:
            raise StacError(f"{what}: href {href!r} points outside {self.folder} ({exc})") from None
        if not inside:
            raise StacError(f"{what}: href {href!r} points outside {self.folder}")
        return lexical[len(self.folder.rstrip("/")) + 1:]

    def _inside(self, lexical: str) -> bool:
        """Whether the real path of LEXICAL (a path under the folder) stays under the folder's."""
        if os.path.islink(lexical):
            self._resolve(lexical)
            return True
        return is_under(self._real_dir(os.path.dirname(lexical)), self._real_dirs[self.folder])

    def _resolve(self, link: str) -> str:
        """The real path of LINK, by the one rule of `eotdlfs.paths` (RefusedSymlink when it leads out)."""
        return str(resolve_inside(link, self._real_dirs[self.folder]))

    def _real_dir(self, directory: str) -> str:
        known = self._real_dirs.get(directory)
        if known is None:
            if directory == os.path.dirname(directory):  # above the folder: cannot happen after the lexical check
                return os.path.realpath(directory)
            if os.path.islink(directory):
                known = self._resolve(directory)
            else:
                known = os.path.join(self._real_dir(os.path.dirname(directory)), os.path.basename(directory))
            self._real_dirs[directory] = known
        return known


def read_local_catalog(folder: Path) -> CatalogFiles:
    """The documents (rewritten) and asset files of the STAC dataset in FOLDER.

    Raises StacError (or MetadataError for the dataset name) naming what is wrong;
    nothing is returned unless the whole catalog is valid.
    """
    source = FolderSource(folder)
    return read_catalog(source, lambda rel: os.path.isfile(source.path(rel)), source.folder)


def read_catalog(source: Source, is_file: Callable[[str], bool], where: str) -> CatalogFiles:
    """The documents (rewritten) and asset files of the catalog SOURCE reads; IS_FILE says whether
    a path inside it is a file (WHERE names the place in errors)."""
    nodes = walk(source)
    for node in nodes:
        check_id(node.stac, node.path)
        check_with_pystac(node.stac, node.path)
        assets = node.stac.get("assets") or {}
        if not isinstance(assets, dict):
            raise StacError(f"{node.path}: 'assets' must be an object")
        for key, asset in assets.items():
            what = f"{node.path}: asset {key!r}"
            href = asset.get("href") if isinstance(asset, dict) else None
            if not isinstance(href, str):
                raise StacError(f"{what}: no href")
            rel = source.target(node.path, href, what)
            if not is_file(rel):
                raise StacError(f"{what}: {href!r} is not a file in {where}")
            node.assets[key] = rel
        node.local_links = _links_to_files(source, is_file, node.path, node.stac)
    name = nodes[0].stac["id"]
    try:
        validate_name(name)
    except MetadataError as exc:
        raise MetadataError("id", f"of {nodes[0].path} is the dataset's name and {exc.rule}") from None
    return self_contained(nodes, name)


def _links_to_files(source: Source, is_file: Callable[[str], bool], document: str,
                    stac: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """DOCUMENT's non-structural links (license, describedby, derived_from, ...) to files inside
    the catalog, with those files' paths; a link leading out of it or to no file is left out."""
    kept = []
    for link in stac.get("links") or []:
        if not isinstance(link, dict) or link.get("rel") in STRUCTURAL_RELS:
            continue
        href = link.get("href")
        if not isinstance(href, str) or is_remote(href):
            continue
        try:
            path = source.target(document, href, f"{document}: {link.get('rel')} link")
        except StacError:
            continue  # the uploader's disk: no reader has it
        if is_file(path):
            kept.append((link, path))
    return kept
