"""The repository's rules over the database and blobs: records, versions, file versions, uploads.

Every method checks everything (record, owner, version, paths, checksums) and stages
all bytes before it writes a row, and writes its rows in one transaction, so a refused
request stores nothing and a reader never sees half of an accepted one. Blobs are
renamed into place inside that transaction, after its last check and before it commits.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy.exc import IntegrityError

from eotdlfs.metadata import Metadata, MetadataError, record_noun
from eotdlfs.server import errors
from eotdlfs.server.auth import Reader, nobody
from eotdlfs.server.blobs import Staged, TooBig, open_blobs
from eotdlfs.server.db import IN_A_VERSION, PUBLISHED, Database, Row, Tx, version_files_query
from eotdlfs.server.errors import ApiError, bad_request
from eotdlfs.server.limits import Limits
from eotdlfs.server.recordedit import RecordEdits
from eotdlfs.server.stac import StacDatasets
from eotdlfs.server.uploads import MultipartUploads
from eotdlfs.server.values import checked_path, checked_sha1, utc_now
from eotdlfs.server.zipbatch import unpack_batch


@dataclass(frozen=True)
class BlobRef:
    """The blob of one file version: its SHA-1 (its name in the blob store) and size."""

    checksum: str
    size: int
    published: bool = False  # a published version holds this file version: it never changes (never discarded)


class Store(MultipartUploads, StacDatasets, RecordEdits):
    """All state of one repository root."""

    def __init__(self, root: Path, limits: Limits | None = None, db_url: str | None = None,
                 blobs_url: str | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.limits = limits or Limits()
        self.db = Database(self.root, db_url, timeout_s=self.limits.db_statement_timeout_s)
        self.blobs = open_blobs(self.root, blobs_url)

    @property
    def queries_may_stall(self) -> bool:
        """Whether a query may wait on the network (PostgreSQL): then it must not run on the event loop."""
        return self.db.postgres

    def recover(self) -> None:
        """At server start: drop what crashed requests left, and expired uploads."""
        self.blobs.drop_stale_temp_files()
        self.drop_expired_uploads()
        with self.db.read() as conn:
            live = {r["upload_id"] for r in conn.execute("SELECT upload_id FROM uploads")}
        self.blobs.drop_uploads_except(live)

    def drop_expired_uploads(self) -> None:
        """Drop the rows and parts of uploads older than the limits' `upload_ttl_s`: at start, and now
        and then while the server runs (`app`), on every replica. A chunk racing with its upload's
        expiry may leave its part behind, an orphan the next start drops."""
        cutoff = datetime.fromtimestamp(time.time() - self.limits.upload_ttl_s, timezone.utc).isoformat()
        with self.db.write() as conn:
            expired = [r["upload_id"] for r in conn.execute("SELECT upload_id FROM uploads WHERE created_at < ?",
                                                              (cutoff,))]
            conn.execute("DELETE FROM uploads WHERE created_at < ?", (cutoff,))
        for upload_id in expired:
            self.blobs.drop_upload(upload_id)

    # -- lookups ------------------------------------------------------------

    def _record(self, conn: Tx, kind: str, record_id: str) -> Row:
        if "\x00" in record_id:  # never stored, and PostgreSQL refuses to even compare text with a NUL
            raise errors.record_missing(kind)
        # in a write, the record's row stays locked until commit: its writers queue on every replica
        row = conn.execute("SELECT * FROM records WHERE id = ? AND kind = ?" + conn.for_update,
                           (record_id, kind)).fetchone()
        if row is None:
            raise errors.record_missing(kind)
        return row

    def _owned(self, conn: Tx, kind: str, record_id: str, uid: str) -> Row:
        row = self._record(conn, kind, record_id)
        if row["uid"] != uid:
            raise errors.not_owner(kind)
        return row

    def _version(self, conn: Tx, kind: str, record_id: str, version: int | None) -> Row:
        row = None
        if version is not None:
            row = conn.execute("SELECT * FROM versions WHERE record_id = ? AND version = ?",
                               (record_id, version)).fetchone()
        if row is None:
            raise errors.version_missing(kind)
        return row

    def _reads_drafts(self, conn: Tx, kind: str, record_id: str, reader: Reader) -> bool:
        """Whether READER owns the record: a draft and its files are its owner's alone until published."""
        uid = reader()
        return uid is not None and self._record(conn, kind, record_id)["uid"] == uid

    def _readable_version(self, conn: Tx, kind: str, record_id: str, version: int | None, reader: Reader) -> Row:
        """VERSION's row; someone else's draft is a version that does not exist."""
        row = self._version(conn, kind, record_id, version)
        if row["draft"] and not self._reads_drafts(conn, kind, record_id, reader):
            raise errors.version_missing(kind)
        return row

    def _latest_file(self, conn: Tx, record_id: str, path: str) -> Row | None:
        return conn.execute(
            "SELECT * FROM file_versions WHERE record_id = ? AND path = ? ORDER BY file_version DESC LIMIT 1",
            (record_id, path)).fetchone()

    # -- records ------------------------------------------------------------

    def _records_json(self, conn: Tx, rows: list[Row]) -> list[dict[str, Any]]:
        if not rows:
            return []
        ids = [r["id"] for r in rows]
        marks = ",".join("?" * len(ids))
        versions: dict[str, list[Row]] = {i: [] for i in ids}
        for v in conn.execute(f"SELECT v.*, COALESCE(s.size, 0) AS size FROM versions v LEFT JOIN version_sizes s"
                              f" ON s.record_id = v.record_id AND s.version = v.version"
                              f" WHERE v.record_id IN ({marks}) ORDER BY v.version", ids):
            versions[v["record_id"]].append(v)
        stac = self._stac_records(conn, ids, versions)
        out = []
        for r in rows:
            entries = {True: [], False: []}
            for v in versions[r["id"]]:
                entries[bool(v["draft"])].append({"version_id": v["version"], "createdAt": v["created_at"],
                                                  "size": v["size"]})
            out.append({
                "id": r["id"], "uid": r["uid"], "name": r["name"], "authors": json.loads(r["authors"]),
                "source": r["source"], "license": r["license"], "files": r["files_id"],
                "description": r["description"], "tags": [], "createdAt": r["created_at"],
                "updatedAt": r["updated_at"], "likes": 0, "downloads": 0, "quality": int(r["id"] in stac),
                "versions": entries[False], "drafts": entries[True],
            })
        return out

    def list_records(self, kind: str, match: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM records WHERE kind = ?", [kind]
        if match and "\x00" in match:  # no name holds one (see _record)
            return []
        if match:
            sql += " AND lower(name) LIKE ? ESCAPE '!'"
            args.append("%" + match.lower().replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%")
        sql += " ORDER BY created_at, name"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(max(limit, 0))
        with self.db.read() as conn:
            return self._records_json(conn, conn.execute(sql, args).fetchall())

    def record_by_name(self, kind: str, name: str) -> dict[str, Any]:
        if "\x00" in name:  # never stored (see _record)
            raise errors.record_missing(kind)
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM records WHERE kind = ? AND name = ?", (kind, name)).fetchone()
            if row is None:
                raise errors.record_missing(kind)
            return self._records_json(conn, [row])[0]

    def create_record(self, kind: str, uid: str, body: Any) -> str:
        try:
            meta = Metadata.from_mapping(body)
        except MetadataError as exc:
            raise bad_request(str(exc)) from None
        description = body.get("description", "") if isinstance(body, dict) else ""
        return self._insert_record(kind, uid, meta, description)

    def _insert_record(self, kind: str, uid: str, meta: Metadata, description: Any, stac: bool = False) -> str:
        """A new record's id; with STAC, one made by `POST datasets/stac` (quality 1 from the start)."""
        record_id, now = secrets.token_hex(12), utc_now()
        try:
            self._insert_record_rows(kind, uid, meta, description, record_id, now, stac)
        except IntegrityError:  # another replica created the same name after our check
            raise errors.record_exists(kind) from None
        return record_id

    def _insert_record_rows(self, kind: str, uid: str, meta: Metadata, description: Any, record_id: str,
                            now: str, stac: bool) -> None:
        with self.db.write() as conn:
            if conn.execute("SELECT 1 FROM records WHERE kind = ? AND name = ?", (kind, meta.name)).fetchone():
                raise errors.record_exists(kind)
            conn.execute(
                "INSERT INTO records (id, kind, uid, name, authors, source, license, description, files_id,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record_id, kind, uid, meta.name, json.dumps(meta.authors), meta.source, meta.license,
                 description if isinstance(description, str) else "", secrets.token_hex(12), now, now))
            if stac:
                conn.execute("INSERT INTO stac_records (record_id) VALUES (?)", (record_id,))

    # -- versions -------------------------------------------------------------

    def create_version(self, kind: str, record_id: str, uid: str, draft: bool = False) -> int:
        with self.db.write() as conn:
            self._owned(conn, kind, record_id, uid)
            last = conn.execute("SELECT MAX(version) AS v FROM versions WHERE record_id = ?",
                                (record_id,)).fetchone()["v"]
            version = (last or 0) + 1
            conn.execute("INSERT INTO versions (record_id, version, created_at, draft) VALUES (?, ?, ?, ?)",
                         (record_id, version, utc_now(), int(draft)))
            self._touch(conn, record_id)
        return version

    def publish(self, kind: str, record_id: str, uid: str, version: int, base: int | None = None) -> None:
        """Make VERSION visible; idempotent. With BASE (the latest published version the writer diffed
        against, 0 for none) a compare-and-swap: 409 and nothing published when another version came since."""
        with self.db.write() as conn:
            self._owned(conn, kind, record_id, uid)
            if not self._version(conn, kind, record_id, version)["draft"]:
                return  # published already (a retried request whose answer was lost)
            if base is not None:
                latest = conn.execute("SELECT COALESCE(MAX(version), 0) AS v FROM versions WHERE record_id = ?"
                                      " AND draft = 0", (record_id,)).fetchone()["v"]
                if latest != base:
                    raise ApiError(409, f"{record_noun(kind)} version {latest} was published meanwhile"
                                        f" (this draft was based on version {base})")
            conn.execute("UPDATE versions SET draft = 0 WHERE record_id = ? AND version = ?", (record_id, version))
            self._touch(conn, record_id)

    def discard(self, kind: str, record_id: str, uid: str, version: int) -> None:
        """Delete draft VERSION and the file versions no other version contains."""
        with self.db.write() as conn:
            self._owned(conn, kind, record_id, uid)
            if not self._version(conn, kind, record_id, version)["draft"]:
                raise ApiError(404, f"{record_noun(kind)} version {version} is not a draft")
            conn.execute("DELETE FROM version_files WHERE record_id = ? AND version = ?", (record_id, version))
            conn.execute("DELETE FROM versions WHERE record_id = ? AND version = ?", (record_id, version))
            conn.execute("DELETE FROM version_sizes WHERE record_id = ? AND version = ?", (record_id, version))
            conn.execute(f"DELETE FROM file_versions AS fv WHERE fv.record_id = ? AND NOT {IN_A_VERSION}", (record_id,))
            self._touch(conn, record_id)

    def _touch(self, conn: Tx, record_id: str) -> None:
        conn.execute("UPDATE records SET updated_at = ? WHERE id = ?", (utc_now(), record_id))

    # -- files ----------------------------------------------------------------

    def list_files(self, kind: str, record_id: str, version: int | None,
                   path: str | None = None, reader: Reader = nobody) -> list[dict[str, Any]]:
        """Route 5. With PATH (ours; the official client never sends it): the entries at PATH,
        or if there are none, the first entry under PATH/ (PATH is a folder), or none.
        Drafts and the file versions only they hold are listed to the record's owner alone."""
        with self.db.read() as conn:
            self._record(conn, kind, record_id)
            if version is None:
                published = "" if self._reads_drafts(conn, kind, record_id, reader) else " AND " + PUBLISHED
                query = ("SELECT path, file_version, checksum, size, created_at FROM file_versions fv"
                         " WHERE record_id = ?" + published, "path", (record_id,), ", file_version")
            else:
                self._readable_version(conn, kind, record_id, version, reader)
                query = (version_files_query("fv.path, fv.file_version, fv.checksum, fv.size, fv.created_at"),
                         "vf.path", (record_id, version), "")
            rows = _files_at(conn, *query, path)
            # `createdAt` (when the file version was made) is ours, beyond the official API: a file carried
            # into later versions keeps it, so a mount shows it as the file's mtime and rsync sees it unchanged
            return [{"filename": r["path"], "version": r["file_version"], "checksum": r["checksum"],
                     "size": r["size"], "createdAt": r["created_at"]} for r in rows]

    def _add_to_version(self, conn: Tx, record_id: str, version: int,
                        path: str, checksum: str, size: int) -> int:
        """Put PATH with CHECKSUM into VERSION: the latest file version if it matches, else a new one."""
        latest = self._latest_file(conn, record_id, path)
        if latest is not None and latest["checksum"] == checksum:
            file_version, size = latest["file_version"], latest["size"]
        else:
            file_version = (latest["file_version"] + 1) if latest is not None else 1
            conn.execute("INSERT INTO file_versions (record_id, path, file_version, checksum, size, created_at)"
                         " VALUES (?, ?, ?, ?, ?, ?)", (record_id, path, file_version, checksum, size, utc_now()))
        self._put_in_version(conn, record_id, version, path, file_version, size)
        return file_version

    def _put_in_version(self, conn: Tx, record_id: str, version: int,
                        path: str, file_version: int, size: int) -> None:
        """VERSION holds FILE_VERSION (SIZE bytes) of PATH; 409 if PATH would be both a file and a folder there."""
        # Two queries, each an index search: SQLite cannot use the index for an OR of both.
        parents = ["/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 1)]
        clash = None
        if parents:
            clash = conn.execute(
                f"SELECT path FROM version_files WHERE record_id = ? AND version = ? AND path IN"
                f" ({','.join('?' * len(parents))}) LIMIT 1", (record_id, version, *parents)).fetchone()
        if clash is None:  # a file under PATH/ ('0' sorts right after '/')
            clash = conn.execute(
                "SELECT path FROM version_files WHERE record_id = ? AND version = ? AND path >= ? AND path < ?"
                " LIMIT 1", (record_id, version, path + "/", path + "0")).fetchone()
        if clash is not None:
            raise ApiError(409, f"File path {path!r} conflicts with {clash['path']!r} in version {version}:"
                                " a path cannot be both a file and a folder")
        replaced = conn.execute(version_files_query("fv.size", "vf.record_id = ? AND vf.version = ? AND vf.path = ?"),
                                (record_id, version, path)).fetchone()
        conn.execute("INSERT INTO version_files (record_id, version, path, file_version) VALUES (?, ?, ?, ?)"
                     " ON CONFLICT (record_id, version, path) DO UPDATE SET file_version = excluded.file_version",
                     (record_id, version, path, file_version))
        conn.execute("INSERT INTO version_sizes (record_id, version, size) VALUES (?, ?, ?) ON CONFLICT"
                     " (record_id, version) DO UPDATE SET size = version_sizes.size + excluded.size",
                     (record_id, version, size - (replaced["size"] if replaced else 0)))

    def _check_writable(self, kind: str, record_id: str, uid: str, version: int | None) -> Row:
        with self.db.read() as conn:
            record = self._owned(conn, kind, record_id, uid)
            self._version(conn, kind, record_id, version)
            return record

    def _commit_files(self, kind: str, record_id: str, uid: str, version: int,
                      staged: list[tuple[str, Staged]]) -> None:
        """Add the rows of STAGED in one transaction, moving the blobs into place just before it commits.

        A refused row (e.g. a path conflict) rolls back before any blob moved; a committed
        row always finds its blob.
        """
        blobs = [blob for _, blob in staged]
        self.blobs.sync_all(blobs)  # outside the write lock: the slow part
        with self.db.write() as conn:
            self._owned(conn, kind, record_id, uid)
            self._version(conn, kind, record_id, version)
            for path, blob in staged:
                self._add_to_version(conn, record_id, version, path, blob.sha1, blob.size)
            self._touch(conn, record_id)
            self.blobs.commit_all(blobs)

    def ingest_batch(self, kind: str, record_id: str, uid: str, version: int | None,
                     batch: BinaryIO, checksums: list[str]) -> tuple[str, list[str]]:
        """Route 6: every file of the zip BATCH into VERSION; (record name, paths)."""
        record = self._check_writable(kind, record_id, uid, version)
        sums = [checked_sha1(c) for c in checksums]
        staged = unpack_batch(batch, sums, self.blobs, self.limits)
        try:
            self._commit_files(kind, record_id, uid, version, staged)
        finally:
            for _, blob in staged:
                blob.discard()
        return record["name"], [p for p, _ in staged]

    def ingest_file(self, kind: str, record_id: str, uid: str, version: int | None,
                    filename: Any, source: BinaryIO, checksum: str) -> str:
        """Route 8: one file into VERSION; its record's name."""
        record = self._check_writable(kind, record_id, uid, version)
        path, expected = checked_path(filename), checked_sha1(checksum)
        try:
            blob = self.blobs.stage(source, limit=self.limits.max_body_bytes)
        except TooBig:
            raise ApiError(413, "File too large") from None
        try:
            if blob.sha1 != expected:
                raise bad_request(errors.CHECKSUM_MISMATCH)
            self._commit_files(kind, record_id, uid, version, [(path, blob)])
        finally:
            blob.discard()
        return record["name"]

    def carry_files(self, kind: str, record_id: str, uid: str, version: int | None,
                    filenames: list[str], checksums: list[str], any_path: bool = False) -> str:
        """Route 7: put already-stored files into VERSION, all or none; the record's name.

        ANY_PATH (our extension): a path none of whose file versions has the checksum takes the
        bytes of any file of the record that has it, as a new file version (a rename or a copy
        sends no bytes: the blobs are named by their SHA-1)."""
        if len(filenames) != len(checksums):
            raise bad_request(f"{len(filenames)} filenames but {len(checksums)} checksums")
        pairs = [(checked_path(f), checked_sha1(c)) for f, c in zip(filenames, checksums)]
        with self.db.write() as conn:
            record = self._owned(conn, kind, record_id, uid)
            self._version(conn, kind, record_id, version)
            for path, checksum in pairs:
                # The newest file version with this content, not only the latest one, so a
                # file changed back to older bytes is carried instead of refused.
                match = conn.execute(
                    "SELECT file_version, size FROM file_versions WHERE record_id = ? AND path = ? AND checksum = ?"
                    " ORDER BY file_version DESC LIMIT 1", (record_id, path, checksum)).fetchone()
                if match is None and any_path:
                    known = conn.execute("SELECT size FROM file_versions WHERE record_id = ? AND checksum = ? LIMIT 1",
                                         (record_id, checksum)).fetchone()
                    if known is not None:
                        self._add_to_version(conn, record_id, version, path, checksum, known["size"])
                        continue
                if match is None:
                    if self._latest_file(conn, record_id, path) is None:
                        raise ApiError(404, errors.FILE_MISSING)
                    raise bad_request(errors.CHECKSUM_MISMATCH)
                self._put_in_version(conn, record_id, version, path, match["file_version"], match["size"])
            self._touch(conn, record_id)
        return record["name"]

    def find_download(self, kind: str, record_id: str, path: str, file_version: int | None,
                      reader: Reader = nobody) -> BlobRef:
        """Route 9: the blob of PATH at FILE_VERSION (latest when None). A file version that no published
        version holds is its record owner's alone: to others it does not exist, and the latest is the
        latest published."""
        if "\x00" in record_id:  # never stored (see _record)
            raise errors.record_missing(kind)
        if "\x00" in path:
            raise ApiError(404, errors.FILE_MISSING)
        # One statement when the file is there and published (what mounts hammer); more only for a draft's
        # file version, or to say what is missing.
        sql = (f"SELECT fv.checksum, fv.size, {PUBLISHED} AS published FROM file_versions fv"
               " JOIN records r ON r.id = fv.record_id WHERE fv.record_id = ? AND r.kind = ? AND fv.path = ?")
        args: tuple[Any, ...] = (record_id, kind, path)
        if file_version is not None:
            sql, args = sql + " AND fv.file_version = ?", args + (file_version,)
        order = " ORDER BY fv.file_version DESC LIMIT 1"
        with self.db.query() as conn:
            row = conn.execute(sql + order, args).fetchone()
            if row is not None and not row["published"] and not self._reads_drafts(conn, kind, record_id, reader):
                row = None if file_version is not None else conn.execute(f"{sql} AND {PUBLISHED}{order}",
                                                                         args).fetchone()
            if row is None:
                self._record(conn, kind, record_id)
                raise ApiError(404, errors.FILE_MISSING)
        return BlobRef(row["checksum"], row["size"], bool(row["published"]))


def _files_at(conn: Tx, select: str, column: str, params: tuple, order: str, path: str | None) -> list[Row]:
    """Rows of SELECT (filtered by PARAMS) sorted by COLUMN then ORDER; with PATH, those at PATH,
    else the first one under PATH/ ('0' sorts right after '/'), each an index search."""
    if path is None:
        return conn.execute(f"{select} ORDER BY {column}{order}", params).fetchall()
    if "\x00" in path:  # never stored, and PostgreSQL refuses to compare text with a NUL
        return []
    rows = conn.execute(f"{select} AND {column} = ? ORDER BY {column}{order}", (*params, path)).fetchall()
    if not rows:
        rows = conn.execute(f"{select} AND {column} >= ? AND {column} < ? ORDER BY {column} LIMIT 1",
                            (*params, path + "/", path + "0")).fetchall()
    return rows
