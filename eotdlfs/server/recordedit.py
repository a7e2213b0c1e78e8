"""The official API's `PUT KIND/ID`: the owner edits a record's authors, license, source, description.

A mixin of `Store`. `metadata.yml` is versioned as a file, but the record's fields were set once,
at creation: a re-ingest with a new license published the new file while every listing kept
the old license. The official server takes `name`, `tags` too; here a name can only be the
record's own (a mount's paths and every `get NAME` stand on it), and tags are not kept.
"""

from __future__ import annotations

import json
from typing import Any

from eotdlfs.metadata import Metadata, MetadataError
from eotdlfs.server.errors import bad_request
from eotdlfs.server.values import utc_now

EDITABLE = ("authors", "license", "source")


class RecordEdits:
    """`PUT KIND/ID` of `Store`."""

    def update_record(self, kind: str, record_id: str, uid: str, body: Any) -> dict[str, Any]:
        """Set the fields of BODY that are given; every field checked as at creation. The record's JSON."""
        if not isinstance(body, dict):
            raise bad_request("The body must be a JSON object")
        with self.db.write() as conn:
            row = self._owned(conn, kind, record_id, uid)
            if body.get("name") not in (None, row["name"]):
                raise bad_request(f"A record cannot be renamed here (from {row['name']!r})")
            merged = {"name": row["name"], "authors": json.loads(row["authors"]), "license": row["license"],
                      "source": row["source"], **{f: body[f] for f in EDITABLE if body.get(f) is not None}}
            try:
                meta = Metadata.from_mapping(merged)
            except MetadataError as exc:
                raise bad_request(str(exc)) from None
            description = body.get("description", row["description"])
            if not isinstance(description, str):
                raise bad_request("description: must be a string")
            conn.execute("UPDATE records SET authors = ?, license = ?, source = ?, description = ?, updated_at = ?"
                         " WHERE id = ?", (json.dumps(meta.authors), meta.license, meta.source, description,
                                          utc_now(), record_id))
            return self._records_json(conn, [self._record(conn, kind, record_id)])[0]
