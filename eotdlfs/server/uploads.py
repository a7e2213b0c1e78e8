"""Multipart uploads (routes 10-12): a large file sent in parts, kept across retries, assembled and checked.

A mixin of `Store`: it uses the store's database, blobs, limits and its record and version checks.
"""

from __future__ import annotations

import re
import secrets
from typing import Any, BinaryIO

from eotdlfs.parts import ENCODINGS, zeros_md5
from eotdlfs.server import errors
from eotdlfs.server.blobs import Staged
from eotdlfs.server.db import Row
from eotdlfs.server.errors import ApiError, bad_request
from eotdlfs.server.encodedparts import Inflating
from eotdlfs.server.values import checked_path, checked_sha1, utc_now

_MD5 = re.compile(r"^[0-9a-f]{32}$")
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


class MultipartUploads:
    """Routes 10-12 of `Store`."""

    def start_upload(self, kind: str, record_id: str, uid: str, filename: Any, checksum: Any) -> tuple[str, list[int]]:
        """Route 10: an upload id for PATH (resumed when the same file was being uploaded)."""
        path, checksum = checked_path(filename), checked_sha1(checksum)
        with self.db.write() as conn:
            self._owned(conn, kind, record_id, uid)
            latest = self._latest_file(conn, record_id, path)
            if latest is not None and latest["checksum"] == checksum:
                raise ApiError(409, "File already exists")
            file_version = latest["file_version"] + 1 if latest is not None else 1
            old = conn.execute("SELECT * FROM uploads WHERE record_id = ? AND uid = ? AND path = ?"
                               " AND file_version = ?", (record_id, uid, path, file_version)).fetchone()
            if old is not None and old["checksum"] == checksum:
                return old["upload_id"], self.blobs.parts(old["upload_id"])
            if old is not None:
                conn.execute("DELETE FROM uploads WHERE upload_id = ?", (old["upload_id"],))
                self.blobs.drop_upload(old["upload_id"])
            self._check_open_uploads(conn, uid)
            upload_id = secrets.token_hex(16)
            conn.execute("INSERT INTO uploads (upload_id, record_id, uid, path, file_version, checksum, created_at)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (upload_id, record_id, uid, path, file_version, checksum, utc_now()))
        return upload_id, []

    def _check_open_uploads(self, conn: Any, uid: str) -> None:
        cap = self.limits.max_open_uploads
        open_uploads = conn.execute("SELECT COUNT(*) AS n FROM uploads WHERE uid = ?", (uid,)).fetchone()["n"]
        if open_uploads >= cap:
            raise ApiError(429, f"You have {open_uploads:,} multipart uploads started and not completed, the most"
                                f" allowed ({cap:,}, EOTDLFS_MAX_OPEN_UPLOADS): complete them, or wait until"
                                " unfinished ones expire")

    def _upload(self, kind: str, upload_id: str, uid: str) -> Row:
        row = None
        if _UPLOAD_ID.match(upload_id):
            with self.db.read() as conn:
                row = conn.execute("SELECT u.*, r.uid AS owner FROM uploads u JOIN records r ON r.id = u.record_id"
                                   " WHERE u.upload_id = ? AND r.kind = ?", (upload_id, kind)).fetchone()
        if row is None:
            raise ApiError(404, errors.UPLOAD_MISSING)
        if row["owner"] != uid:
            raise errors.not_owner(kind)
        return row

    def store_chunk(self, kind: str, upload_id: str, uid: str, part: int, source: BinaryIO, md5: str,
                    encoding: str | None = None, size: int | None = None) -> None:
        """Route 11: keep one part of an upload if its MD5 matches: of its bytes, inflated when ENCODING
        is 'deflate', or of SIZE zero bytes when it is 'zeros' (the body is then empty)."""
        self._upload(kind, upload_id, uid)
        if encoding not in (None, *ENCODINGS):
            raise bad_request(f"encoding {encoding!r} is not one of {', '.join(ENCODINGS)}")
        if encoding == "deflate":
            source = Inflating(source, self.limits.max_body_bytes)
        if not 1 <= part <= self.limits.max_parts:
            raise bad_request(f"part_number must be between 1 and {self.limits.max_parts}")
        if not isinstance(md5, str) or not _MD5.match(md5.lower()):
            raise bad_request(f"checksum {md5!r} is not an MD5 hex digest")
        if encoding == "zeros":
            if not isinstance(size, int) or not 0 < size <= self.limits.max_body_bytes:
                raise bad_request(f"a part of zeros needs a size between 1 and {self.limits.max_body_bytes}")
            if md5.lower() != zeros_md5(size):
                raise bad_request(errors.CHECKSUM_MISMATCH)
            self.blobs.store_zero_part(upload_id, part, size)
        elif not self.blobs.store_part(upload_id, part, source, md5.lower()):
            raise bad_request(errors.CHECKSUM_MISMATCH)

    def complete_upload(self, kind: str, upload_id: str, uid: str, version: int | None) -> tuple[str, str, str, int]:
        """Route 12: assemble, verify and add the file; (record id, record name, path, file version)."""
        upload = self._upload(kind, upload_id, uid)
        record_id = upload["record_id"]
        record = self._check_writable(kind, record_id, uid, version)
        try:
            blob = self._assembled(upload_id)
        except Exception:
            self._upload(kind, upload_id, uid)  # 404 if a concurrent complete finished and dropped the parts
            raise
        try:
            if blob.sha1 != upload["checksum"]:
                self._upload(kind, upload_id, uid)  # parts dropped under us by a finished complete: 404
                self._drop_upload(upload_id)  # the parts are wrong: a retry must start over
                raise bad_request(errors.CHECKSUM_MISMATCH)
            self.blobs.sync_all([blob])
            with self.db.write() as conn:
                self._owned(conn, kind, record_id, uid)
                self._version(conn, kind, record_id, version)
                if conn.execute("SELECT 1 FROM uploads WHERE upload_id = ?", (upload_id,)).fetchone() is None:
                    raise ApiError(404, errors.UPLOAD_MISSING)  # a concurrent complete of it won
                file_version = self._add_to_version(conn, record_id, version, upload["path"], blob.sha1, blob.size)
                conn.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
                self._touch(conn, record_id)
                self.blobs.commit_all([blob])  # in place before the rows naming it commit
        finally:
            blob.discard()
        self.blobs.drop_upload(upload_id)
        return record_id, record["name"], upload["path"], file_version

    def _assembled(self, upload_id: str) -> Staged:
        """The staged concatenation of every part of UPLOAD_ID; 400 when none or some are missing."""
        parts = self.blobs.parts(upload_id)
        if not parts:
            raise bad_request("No parts were uploaded")
        missing = sorted(set(range(1, parts[-1] + 1)) - set(parts))
        if missing:
            raise bad_request("Missing parts: " + ", ".join(map(str, missing[:20])))
        return self.blobs.assemble(upload_id, parts)

    def _drop_upload(self, upload_id: str) -> None:
        with self.db.write() as conn:
            conn.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
        self.blobs.drop_upload(upload_id)

