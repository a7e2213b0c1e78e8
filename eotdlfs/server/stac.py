"""STAC (Q1+) datasets on the server: routes S1, S4 and S5 of the official client, and `quality`.

A mixin of `Store`. A STAC version is self-contained: its catalog, collection and item
documents are files of the version (blobs with their SHA-1, like any file) beside its
assets, so mounts and `get` read only stored, checksummed files. The official client
uploads the assets (route 8), then PUTs its STACDataFrame (S4); the server turns that into
the documents and adds them to the version in one transaction, or refuses it whole. A
record's `quality` is 1 when its latest published version holds a root `catalog.json`, or
when it was made by S1; drafts do not change it.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from eotdlfs.metadata import Metadata, MetadataError, validate_name
from eotdlfs.server import errors
from eotdlfs.server.auth import Reader
from eotdlfs.server.db import Row, Tx, version_files_query
from eotdlfs.server.errors import ApiError, bad_request
from eotdlfs.stac import StacError, StoredSource, documents_to_feature_collection, feature_collection_to_documents
from eotdlfs.stac.rules import ROOT_DOCUMENT

STAC_KIND = "datasets"  # the official API has STAC datasets only


def stac_refused(exc: StacError) -> ApiError:
    return ApiError(422, f"Invalid STAC catalog: {exc}")


STAC_ROOT_ROWS = ("SELECT record_id, version FROM version_files WHERE record_id IN ({records})"
                  " AND version IN ({versions}) AND path = ?")


class StacDatasets:
    """Routes S1, S4 and S5 of `Store`."""

    def _stac_records(self, conn: Tx, ids: list[str], versions: dict[str, list[Row]]) -> set[str]:
        """Those of IDS whose quality is 1. VERSIONS: each record's version rows."""
        marks = ",".join("?" * len(ids))
        found = {r["record_id"] for r in
                 conn.execute(f"SELECT record_id FROM stac_records WHERE record_id IN ({marks})", ids)}
        latest = {i: max((v["version"] for v in rows if not v["draft"]), default=None) for i, rows in versions.items()}
        numbers = sorted({v for v in latest.values() if v is not None})
        if not numbers:
            return found
        # The whole key (record, version, path): by the record alone this read every file row of every
        # record listed, on each listing.
        for r in conn.execute(STAC_ROOT_ROWS.format(records=marks, versions=",".join("?" * len(numbers))),
                              (*ids, *numbers, ROOT_DOCUMENT)):
            if latest[r["record_id"]] == r["version"]:
                found.add(r["record_id"])
        return found

    def create_stac_record(self, kind: str, uid: str, body: Any) -> str:
        """S1: a STAC dataset named after its root catalog's id; the name rules and uniqueness of route 3."""
        if kind != STAC_KIND:
            raise ApiError(404, "STAC records are datasets only")
        try:
            name = validate_name(body.get("name") if isinstance(body, dict) else None)
        except MetadataError as exc:
            raise bad_request(str(exc)) from None
        return self._insert_record(kind, uid, Metadata(name=name, authors=[], license="", source=""), "", stac=True)

    def _version_or_latest(self, conn: Tx, kind: str, record_id: str, version: int | None, drafts: bool) -> Row:
        if version is None:
            version = conn.execute("SELECT MAX(version) AS v FROM versions WHERE record_id = ?"
                                   + ("" if drafts else " AND draft = 0"), (record_id,)).fetchone()["v"]
        return self._version(conn, kind, record_id, version)

    def _version_files(self, conn: Tx, record_id: str, version: int) -> dict[str, Row]:
        rows = conn.execute(version_files_query("fv.path, fv.checksum, fv.size"), (record_id, version))
        return {r["path"]: r for r in rows}

    def put_stac(self, kind: str, record_id: str, uid: str, body: Any, version: int | None = None) -> int:
        """S4: the catalog of VERSION (default: the latest, draft or not) from the official FeatureCollection.

        Its documents become files of the version, all in one transaction. A version's
        catalog is written once: a second PUT is accepted only when it makes the same
        documents (a retry whose answer was lost), else 409. Returns the version.
        """
        if kind != STAC_KIND:
            raise ApiError(404, "STAC records are datasets only")
        if not isinstance(body, dict) or "stac" not in body:
            raise bad_request('The body must be {"stac": <GeoJSON FeatureCollection>}')
        with self.db.read() as conn:
            self._owned(conn, kind, record_id, uid)
            version = self._version_or_latest(conn, kind, record_id, version, drafts=True)["version"]
            files = self._version_files(conn, record_id, version)
        try:
            catalog = feature_collection_to_documents(body["stac"], record_id, set(files))
        except StacError as exc:
            raise stac_refused(exc) from None
        staged = []
        try:
            for path, data in catalog.documents:  # in the loop: a failed stage still discards the ones before
                staged.append((path, self.blobs.stage(io.BytesIO(data))))
            self.blobs.sync_all([blob for _, blob in staged])
            with self.db.write() as conn:
                self._owned(conn, kind, record_id, uid)
                self._version(conn, kind, record_id, version)
                files = self._version_files(conn, record_id, version)  # now, under the record's write lock
                if ROOT_DOCUMENT in files:
                    if all(path in files and files[path]["checksum"] == blob.sha1 for path, blob in staged):
                        return version  # the same PUT again: a retry whose answer was lost
                    raise ApiError(409, f"Dataset version {version} already has its STAC catalog;"
                                        " a changed catalog needs a new version")
                for path, blob in staged:
                    self._add_to_version(conn, record_id, version, path, blob.sha1, blob.size)
                self._touch(conn, record_id)
                self.blobs.commit_all([blob for _, blob in staged])
        finally:
            for _, blob in staged:
                blob.discard()
        return version

    def stac_feature_collection(self, kind: str, record_id: str, version: int | None,
                                download_url: Callable[[str], str], reader: Reader) -> dict[str, Any]:
        """S5: VERSION's catalog (default: the latest published) as the official `get` reads it; a draft's
        to its owner alone."""
        with self.db.read() as conn:
            self._record(conn, kind, record_id)
            row = self._version_or_latest(conn, kind, record_id, version, drafts=False)
            if row["draft"] and not self._reads_drafts(conn, kind, record_id, reader):
                raise errors.version_missing(kind)
            files = self._version_files(conn, record_id, row["version"])
        if ROOT_DOCUMENT not in files:
            raise ApiError(404, f"Dataset version {row['version']} has no STAC catalog")

        def read(path: str) -> bytes:
            if path not in files:
                raise StacError(f"{path}: not a file of version {row['version']}")
            return self.blob_bytes(files[path]["checksum"], files[path]["size"])

        try:
            return documents_to_feature_collection(StoredSource(read), download_url)
        except StacError as exc:  # stored by a writer that bypassed S4, e.g. a plain file upload
            raise ApiError(409, f"The stored STAC catalog of version {row['version']} is not valid: {exc}") from None

    def blob_bytes(self, checksum: str, size: int) -> bytes:
        """The whole bytes of a stored blob (its SIZE from the row that names it)."""
        reader = self.blobs.reader(checksum, 0, max(size - 1, 0))
        try:
            chunks, got = [], 0
            while got < size:
                chunk = reader.read_at(got, size - got)
                if not chunk:
                    raise ApiError(500, f"Blob {checksum} is shorter than its {size} bytes")
                chunks.append(chunk)
                got += len(chunk)
            return b"".join(chunks)
        finally:
            reader.close()

