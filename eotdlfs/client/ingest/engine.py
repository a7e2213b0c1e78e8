"""Run an ingest: record, draft version, uploads, carries, publish — resumable into exactly one new version.

Order of work, and why:
1. checksums of the sources (hash cache) and the plan against the LATEST version's files;
   nothing changed -> `NothingToIngest`, no version made;
2. the record: created when the name is new, refused when someone else owns it;
3. the version: the draft THIS writer created (its `DraftLedger` says which) is reused, so a
   re-run after a crash finishes that draft instead of starting another; files it already
   holds with the wanted checksum are not sent again; holding anything else, it is discarded.
   Another writer's draft is never touched: a new draft is created and recorded in the ledger
   before any byte is sent;
4. large files by multipart (the server keeps received parts, so a re-run sends only the
   missing ones), small ones in zip batches, unchanged ones carried (route 7, no bytes), and
   so are renamed and copied ones when the server carries known bytes under a new path;
5. publish as a compare-and-swap: `base` = the latest version the plan was made against. If
   another writer published meanwhile, the server refuses (409), the draft is discarded and
   `VersionConflict` says which version came: a version never mixes two writers' files.
   Readers see the version only now. A server without drafts gets a plain version.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from pathlib import Path
from typing import Sequence

from eotdlfs.client.api import ApiClient
from eotdlfs.client.errors import Conflict, Forbidden, NothingToIngest, NotFound, RepositoryError, VersionConflict
from eotdlfs.client.hashcache import HashCache, file_key
from eotdlfs.client.ingest.ledger import DraftLedger, user_ledger
from eotdlfs.client.ingest.lock import ingest_lock
from eotdlfs.client.ingest.plan import (Carry, IngestPlan, LatestFile, SourceFile, Upload, chunked, plan_ingest,
                                        upload_batches)
from eotdlfs.client.ingest.sources import RefusedSymlink, scan_folder
from eotdlfs.client.ingest.stac import catalog_name, is_stac_folder, stac_sources
from eotdlfs.client.repository import record_versions
from eotdlfs.client.ingest.transfer import PARALLEL_REQUESTS, send_batch, send_multipart
from eotdlfs.parallel import in_parallel
from eotdlfs.client.progress import TransferProgress
from eotdlfs.metadata import METADATA_FILE, Metadata, MetadataError, load_metadata, record_noun
from eotdlfs.repository import IngestResult
from eotdlfs.stac.rules import ROOT_DOCUMENT

log = logging.getLogger(__name__)

BATCH_MAX_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_FORM_FIELDS = 1000  # Starlette's default cap on form fields per request


def ingest_folder(api: ApiClient, kind: str, folder: Path, progress: TransferProgress | None = None,
                  cache: HashCache | None = None, ledger: DraftLedger | None = None) -> IngestResult:
    """Ingest FOLDER (with its metadata.yml, or a STAC catalog.json) as the next version of the record it names.

    Everything about the folder is checked before any network call: a bad metadata.yml or
    catalog costs nothing and publishes nothing.
    """
    _check_record_folder(folder)
    cache = cache or HashCache()
    try:
        if is_stac_folder(folder):
            metadata, sources = stac_sources(folder, cache)
        else:
            metadata = load_metadata(folder)
            sources = scan_folder(folder, cache)
    finally:
        cache.close()
    return run_ingest(api, kind, metadata, sources, progress, ledger or user_ledger())


def folder_name(folder: Path) -> str:
    """The name of the record FOLDER ingests into: its STAC catalog's id, else its metadata.yml's name."""
    _check_record_folder(folder)
    return catalog_name(folder) if is_stac_folder(folder) else load_metadata(folder).name


def _check_record_folder(folder: Path) -> None:
    """OSError naming FOLDER when it is missing or a file; MetadataError naming both kinds of
    record folder when it has neither root file (a STAC folder is as much a record as a
    metadata.yml one, so the error must not send its owner looking for a metadata.yml alone)."""
    if not folder.is_dir():
        if folder.exists():
            raise NotADirectoryError(errno.ENOTDIR, "a file, not a folder", str(folder))
        raise FileNotFoundError(errno.ENOENT, "no such folder", str(folder))
    if not (folder / METADATA_FILE).exists() and not is_stac_folder(folder):
        raise MetadataError(f"{METADATA_FILE} or {ROOT_DOCUMENT}", f"neither found in {folder}: a record's folder "
                            f"holds one at its root ({METADATA_FILE}: name, authors, license, source; or the root "
                            "catalog of a STAC dataset)")


def run_ingest(api: ApiClient, kind: str, metadata: Metadata, sources: Sequence[SourceFile],
               progress: TransferProgress | None = None, ledger: DraftLedger | None = None,
               base: int | None = None) -> IngestResult:
    """Make the record's next version hold exactly SOURCES (checksums computed here when missing).

    LEDGER: the drafts this writer owns (default: the user's). BASE: the version SOURCES were
    derived from (0 for none); when given and no longer the latest, `VersionConflict` before
    anything is sent. Without it, SOURCES are ingested onto whatever version is latest now.
    """
    record_noun(kind)
    metadata = Metadata.from_mapping(metadata.to_json())  # the shared rules, whoever built METADATA
    if not any(s.path in (METADATA_FILE, ROOT_DOCUMENT) for s in sources):
        raise MetadataError(METADATA_FILE, f"(or a STAC {ROOT_DOCUMENT}) must be one of the files ingested")
    progress = progress or TransferProgress()
    check_local_sources(sources)
    sources = with_checksums(sources)
    ledger = ledger or user_ledger()
    with ingest_lock(api.base_url, kind, metadata.name, ledger.path.parent / "locks"):
        return _ingest_locked(api, kind, metadata, sources, progress, ledger, base)


def _ingest_locked(api: ApiClient, kind: str, metadata: Metadata, sources: list[SourceFile],
                   progress: TransferProgress, ledger: DraftLedger, base: int | None) -> IngestResult:
    record = ensure_record(api, kind, metadata)
    versions = record_versions(record)
    latest = latest_published(versions)
    if base is not None and (latest or 0) != base:
        raise VersionConflict(record_noun(kind), latest or 0, base)
    latest_files = [
        LatestFile(f["filename"], int(f["version"]), f["checksum"])
        for f in (api.files(kind, record["id"], latest) if latest is not None else [])
    ]
    plan = plan_ingest(sources, latest_files, api.carries_any_path)
    if plan.nothing_changed and latest is not None:
        raise NothingToIngest(metadata.name, latest)
    drafts = sorted(int(v["version_id"]) for v in versions if v.get("draft"))
    version, plan, resumed = open_version(api, kind, record["id"], plan, drafts, ledger)
    bytes_sent = execute(api, kind, record["id"], version, plan, progress)
    if api.supports_drafts:
        publish(api, kind, record, version, latest or 0, ledger)
    note = "" if any(s.path == ROOT_DOCUMENT for s in sources) else update_record_fields(api, kind, record, metadata)
    return IngestResult(version=version, uploaded=len(plan.uploads), carried=len(plan.carries),
                        dropped=len(plan.drops), bytes_sent=bytes_sent, resumed=resumed, record_note=note)


def update_record_fields(api: ApiClient, kind: str, record: dict, metadata: Metadata) -> str:
    """Give the record the authors, license and source of the metadata.yml just published, which are
    set only at creation otherwise; what was done, or why not (the version stands either way)."""
    changed = {field: value for field, value in metadata.to_json().items()
               if field != "name" and record.get(field) != value}
    if not changed:
        return ""
    try:
        api.update_record(kind, record["id"], changed)
    except RepositoryError as exc:
        return f"the record's {', '.join(changed)} not updated from {METADATA_FILE}: {exc}"
    return f"the record's {', '.join(changed)} updated from {METADATA_FILE}"


def check_local_sources(sources: Sequence[SourceFile]) -> None:
    """Refuse, before the server is asked anything, a source whose bytes are a symlink: a version is public,
    and a link may lead anywhere (the folder scan hands over the resolved file of each link it allows)."""
    for source in sources:
        if source.local_path is not None and os.path.islink(source.local_path):
            raise RefusedSymlink(f"{source.path}: its bytes at {source.local_path} are a symlink "
                                 f"(to {os.readlink(source.local_path)}); an ingest reads only regular files")


def with_checksums(sources: Sequence[SourceFile]) -> list[SourceFile]:
    """SOURCES with every missing checksum filled in from the hash cache (or by reading the file)."""
    missing = [s for s in sources if s.checksum is None]
    if not missing:
        return list(sources)
    keys = {}
    for s in missing:
        st = os.stat(s.local_path)  # type: ignore[arg-type]  # SourceFile guarantees bytes when no checksum
        keys[s.path] = file_key(str(Path(s.local_path).absolute()), st)  # type: ignore[arg-type]
    cache = HashCache()
    try:
        digests = cache.digests(list(keys.values()))
    finally:
        cache.close()
    return [s if s.checksum else SourceFile(s.path, keys[s.path][1], digests[keys[s.path]], s.local_path)
            for s in sources]


def ensure_record(api: ApiClient, kind: str, metadata: Metadata) -> dict:
    """The record named in METADATA, created if new; Forbidden when it belongs to someone else."""
    try:
        record = api.record_by_name(kind, metadata.name)
    except NotFound:
        try:
            api.create_record(kind, metadata)
        except Conflict:
            pass  # created meanwhile (or by our own retried request): look at whose it is below
        record = api.record_by_name(kind, metadata.name)
    me = api.settings.user_id
    if me is not None and record.get("uid") != me:
        raise Forbidden(f"{record_noun(kind)} {metadata.name} belongs to {record.get('uid')}, not to you ({me}); "
                        "choose another name", 403)
    return record


def open_version(api: ApiClient, kind: str, record_id: str, plan: IngestPlan, drafts: list[int],
                 ledger: DraftLedger) -> tuple[int, IngestPlan, int]:
    """The version to fill (our reused draft, a new draft, or a plain new version), the plan
    left to do, files resumed."""
    if not api.supports_drafts:
        return api.create_version(kind, record_id), plan, 0
    key = (kind, record_id)
    mine = ledger.draft(*key)
    if mine is not None and mine in drafts:
        present = {f["filename"]: f["checksum"] for f in api.files(kind, record_id, mine)}
        if plan.accepts(present):
            remaining = plan.without(present)
            resumed = len(plan.uploads) + len(plan.carries) - len(remaining.uploads) - len(remaining.carries)
            return mine, remaining, resumed
        ledger.forget(*key)  # before the discard: the server may hand the number out again, maybe to another writer
        api.discard_draft(kind, record_id, mine)
    draft = api.create_version(kind, record_id, draft=True)
    ledger.record(*key, draft)  # before any byte goes into it
    return draft, plan, 0


def publish(api: ApiClient, kind: str, record: dict, version: int, base: int, ledger: DraftLedger) -> None:
    """Publish draft VERSION if BASE is still the latest version; else discard it and raise `VersionConflict`."""
    record_id, name = record["id"], record["name"]
    key = (kind, record_id)
    try:
        api.publish(kind, record_id, version, base=base)
    except Conflict as exc:
        ledger.forget(*key)
        try:
            api.discard_draft(kind, record_id, version)
        except RepositoryError as discard_failed:  # an orphan draft stays: hidden, in nobody's ledger, harmless
            log.warning("cannot discard draft %d of %s: %s", version, record_id, discard_failed)
        now = latest_published(record_versions(api.record_by_name(kind, name)))
        raise VersionConflict(record_noun(kind), now or 0, base) from exc
    ledger.forget(*key)


def latest_published(versions: list[dict]) -> int | None:
    """The newest published version among a record's VERSIONS (`record_versions`); None when none."""
    return max((int(v["version_id"]) for v in versions if not v.get("draft")), default=None)


def execute(api: ApiClient, kind: str, record_id: str, version: int, plan: IngestPlan,
            progress: TransferProgress) -> int:
    """Send the plan's uploads and carries into VERSION; returns the bytes sent."""
    max_fields = int(api.capabilities().get("max_form_fields", DEFAULT_MAX_FORM_FIELDS))
    per_request = max(1, (max_fields - 10) // 2)  # route 7 sends two fields per file
    progress.start(len(plan.uploads) + len(plan.carries), plan.bytes_to_send)
    sent = 0
    with tempfile.TemporaryDirectory(prefix="eotdlfs-ingest-") as scratch_dir:
        scratch = Path(scratch_dir)
        for upload in (u for u in plan.uploads if u.multipart):  # one at a time; its parts go in parallel
            local = local_bytes(api, kind, record_id, upload, scratch)
            sent += send_multipart(api, kind, record_id, version, upload, local,
                                   lambda n: progress.advance(bytes_done=n))
            progress.advance(files=1)

        def send(batch: list[Upload]) -> int:
            send_batch(api, kind, record_id, version,
                       [(u.source.path, local_bytes(api, kind, record_id, u, scratch), u.source.checksum or "")
                        for u in batch])
            size = sum(u.source.size for u in batch)
            progress.advance(files=len(batch), bytes_done=size)
            return size

        small = [u for u in plan.uploads if not u.multipart]
        sent += sum(in_parallel(send, upload_batches(small, BATCH_MAX_BYTES, per_request), PARALLEL_REQUESTS))

    def carry(carries: Sequence[Carry]) -> None:
        api.carry(kind, record_id, version, [c.path for c in carries], [c.checksum for c in carries],
                  any_path=any(c.new_path for c in carries))
        progress.advance(files=len(carries))

    in_parallel(carry, chunked(plan.carries, per_request), PARALLEL_REQUESTS)
    return sent


def local_bytes(api: ApiClient, kind: str, record_id: str, upload: Upload, scratch: Path) -> Path:
    """Where UPLOAD's bytes are on disk: its own file, or a copy fetched from the latest version."""
    if upload.source.local_path is not None:
        return upload.source.local_path
    origin = upload.origin
    assert origin is not None  # plan_ingest gives every non-local upload an origin
    fd, target = tempfile.mkstemp(dir=scratch, prefix="origin-")
    with api.download(kind, record_id, origin.path, origin.file_version) as blocks, os.fdopen(fd, "wb") as out:
        for block in blocks:
            out.write(block)
    return Path(target)
