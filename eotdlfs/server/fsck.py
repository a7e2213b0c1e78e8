"""Integrity check of a repository root: the database and the blobs agree, nothing is half-done.

Read-only: it changes no row and no blob (it only creates the empty blob folders of a root
that lacks them). It checks either layout of `eotdlfs serve`: SQLite and a folder under the
root, or the database of `--db` and the store of `--blobs` (a PostgreSQL and a bucket). It
sorts what it finds into three kinds:

- problems: data a reader could lose or get wrong: a listed file version whose blob is
  missing, of the wrong size or of other bytes; a version naming a file version that does
  not exist; rows of records that do not exist; a database that fails its own check.
- orphans: bytes stored but named by nothing (blobs no file version lists, temp files and
  upload parts left by a crash). Harmless; they are what a garbage collector would take.
- notes: drafts still pending, published versions with no files, gaps in version numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from eotdlfs.metadata import KINDS, MetadataError, validate_name
from eotdlfs.server.blobs import Blobs, open_blobs
from eotdlfs.server.db import DB_FILE, Database, Tx, version_files_query


@dataclass
class FsckReport:
    """What `check` found; `ok` when there is no problem (orphans and notes allowed)."""

    problems: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    records: int = 0
    versions: int = 0
    drafts: int = 0
    file_versions: int = 0
    blobs_checked: int = 0
    bytes_hashed: int = 0
    version_sizes: dict[tuple[str, int], int] = field(default_factory=dict)  # (record id, version) -> bytes

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        verdict = "ok" if self.ok else f"{len(self.problems)} problem(s)"
        return (f"{verdict}: {self.records} records, {self.versions} versions ({self.drafts} drafts), "
                f"{self.file_versions} file versions, {self.blobs_checked} blobs checked "
                f"({self.bytes_hashed} bytes hashed), {len(self.orphans)} orphan(s)")


def check(root: Path | None, hash_blobs: bool = True, db_url: str | None = None,
          blobs_url: str | None = None) -> FsckReport:
    """Check the repository under ROOT (or in DB_URL and BLOBS_URL); with HASH_BLOBS false, sizes only."""
    report = FsckReport()
    if db_url is None:
        db_path = Path(root) / DB_FILE
        if not db_path.is_file():
            report.problems.append(f"{db_path}: no database")
            return report
    db = Database(root, db_url, read_only=True)
    try:
        with db.read() as conn:  # one consistent snapshot, even while servers write
            if not db.postgres:
                _check_database(conn, report)
            _check_records(conn, report)
            blobs = open_blobs(root, blobs_url)
            referenced = _check_file_versions(conn, blobs, report, hash_blobs)
            _check_versions(conn, report)
            _find_orphans(conn, blobs, referenced, report)
    finally:
        db.close()
    return report


def _check_database(conn: Tx, report: FsckReport) -> None:
    result = [r["integrity_check"] for r in conn.execute("PRAGMA integrity_check")]
    if result != ["ok"]:
        report.problems.extend(f"database: {line}" for line in result)


def _check_records(conn: Tx, report: FsckReport) -> None:
    for r in conn.execute("SELECT id, kind, name FROM records"):
        report.records += 1
        if r["kind"] not in KINDS:
            report.problems.append(f"record {r['id']}: unknown kind {r['kind']!r}")
        try:
            validate_name(r["name"])
        except MetadataError as exc:
            report.problems.append(f"record {r['id']}: {exc}")
    for table in ("versions", "file_versions", "version_files", "uploads", "stac_records"):
        for row in conn.execute(f"SELECT DISTINCT record_id FROM {table} "
                                f"WHERE record_id NOT IN (SELECT id FROM records)"):
            report.problems.append(f"{table}: rows of record {row['record_id']} which does not exist")


def _check_file_versions(conn: Tx, blobs: Blobs, report: FsckReport, hash_blobs: bool) -> set[str]:
    """Every file version's blob exists, has its size and (if HASH_BLOBS) its SHA-1; the checksums seen."""
    verdicts: dict[str, tuple[int, str] | None] = {}  # checksum -> (size, sha1) of its blob, None if absent
    for fv in conn.execute("SELECT record_id, path, file_version, checksum, size FROM file_versions"):
        report.file_versions += 1
        where = f"{fv['record_id']}:{fv['path']}@{fv['file_version']}"
        checksum = fv["checksum"]
        try:
            if checksum not in verdicts:
                verdicts[checksum] = _inspect_blob(blobs, checksum, hash_blobs, report)
        except ValueError:
            report.problems.append(f"{where}: checksum {checksum!r} is not a SHA-1")
            continue
        found = verdicts[checksum]
        if found is None:
            report.problems.append(f"{where}: blob {checksum} is missing")
        elif found[0] != fv["size"]:
            report.problems.append(f"{where}: blob has {found[0]} bytes, the database says {fv['size']}")
        elif hash_blobs and found[1] != checksum:
            report.problems.append(f"{where}: blob hashes to {found[1]}, not {checksum}")
    return set(verdicts)


def _inspect_blob(blobs: Blobs, checksum: str, hash_blobs: bool, report: FsckReport) -> tuple[int, str] | None:
    size = blobs.blob_size(checksum)
    if size is None or not hash_blobs:
        return None if size is None else (size, "")
    digest = blobs.blob_sha1(checksum)
    if digest is None:
        return None
    report.blobs_checked += 1
    report.bytes_hashed += size
    return size, digest


def _check_versions(conn: Tx, report: FsckReport) -> None:
    """Each version lists existing file versions, one per path; sizes; drafts and gaps noted."""
    for row in conn.execute(
            "SELECT vf.record_id, vf.version, vf.path, vf.file_version FROM version_files vf "
            "LEFT JOIN file_versions fv ON fv.record_id = vf.record_id AND fv.path = vf.path "
            "AND fv.file_version = vf.file_version WHERE fv.record_id IS NULL"):
        report.problems.append(f"{row['record_id']} v{row['version']}: lists {row['path']}@{row['file_version']}"
                               " which does not exist")
    for row in conn.execute("SELECT DISTINCT record_id, version FROM version_files WHERE NOT EXISTS "
                            "(SELECT 1 FROM versions v WHERE v.record_id = version_files.record_id "
                            "AND v.version = version_files.version)"):
        report.problems.append(f"{row['record_id']} v{row['version']}: files listed for a version that does not exist")
    sizes = {(r["record_id"], r["version"]): (r["size"], r["n"]) for r in conn.execute(version_files_query(
        "vf.record_id, vf.version, COALESCE(SUM(fv.size), 0) AS size, COUNT(*) AS n", "")
        + " GROUP BY vf.record_id, vf.version")}
    numbers: dict[str, list[int]] = {}
    for v in conn.execute("SELECT record_id, version, draft FROM versions ORDER BY record_id, version"):
        report.versions += 1
        numbers.setdefault(v["record_id"], []).append(v["version"])
        size, count = sizes.get((v["record_id"], v["version"]), (0, 0))
        report.version_sizes[(v["record_id"], v["version"])] = size
        if v["draft"]:
            report.drafts += 1
            report.notes.append(f"{v['record_id']} v{v['version']}: draft, not published ({count} files)")
        elif count == 0:
            report.notes.append(f"{v['record_id']} v{v['version']}: published with no files")
    for record_id, got in numbers.items():
        if got != list(range(1, len(got) + 1)):
            report.notes.append(f"{record_id}: version numbers {got} have gaps (a discarded draft)")


def _find_orphans(conn: Tx, blobs: Blobs, referenced: set[str], report: FsckReport) -> None:
    report.orphans.extend(f"{sha1}: blob no file version lists" for sha1 in blobs.stored() if sha1 not in referenced)
    report.orphans.extend(blobs.leftovers({r["upload_id"] for r in conn.execute("SELECT upload_id FROM uploads")}))
