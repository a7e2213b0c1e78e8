"""Download one version of a record into a folder, verifying every file's SHA-1.

Each file is written to a temp file next to its target, hashed as it is written, and
renamed into place only when the SHA-1 matches the listing; a file already present with
the right checksum is not downloaded again, so an interrupted `get` resumes cheaply.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from eotdlfs.client.api import ApiClient
from eotdlfs.client.errors import NotFound, RepositoryError
from eotdlfs.client.hashcache import HashCache, file_key
from eotdlfs.paths import validate_file_path
from eotdlfs.parallel import in_parallel
from eotdlfs.client.progress import TransferProgress
from eotdlfs.client.repository import parse_record
from eotdlfs.metadata import record_noun
from eotdlfs.repository import Record

PARALLEL_FILES = 4
OUT_OF_ROOM = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class DownloadResult:
    folder: Path
    version: int
    downloaded: int
    skipped: int
    bytes_received: int


TEMP_STEM_BYTES = 200  # of a temp file's name: with its dot and suffix, under NAME_MAX (255)


def _temp_stem(name: str) -> str:
    """NAME cut to at most TEMP_STEM_BYTES bytes of UTF-8 (a file's name may have 255; its temp file's too)."""
    return name.encode()[:TEMP_STEM_BYTES].decode(errors="ignore")


def _open_temp(target: Path) -> tuple[int, Path]:
    """TARGET's temp file, empty and locked: one name per target, so the temp a killed `get` left
    is taken over by the next (a name of its own each time left it for good, and an ingest of
    the folder published it); the lock keeps a second `get` into the same folder out of it."""
    temp = target.parent / f".{_temp_stem(target.name)}.part"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
    except BlockingIOError:
        os.close(fd)
        raise RepositoryError(f"{target}: another download of it is under way (its temp file {temp} is locked)") \
            from None
    except BaseException:
        os.close(fd)
        raise
    return fd, temp


def _file_mode() -> int:
    """0666 less the process's umask, as a file `cp` makes gets (a `get` into a group's project folder made
    files only their downloader could read). Read from /proc: `os.umask` can only be read by setting it,
    which would race with the other threads making files."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            umask = next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        umask = 0o022
    return 0o666 & ~umask


def _fetch(api: ApiClient, kind: str, record_id: str, entry: dict, target: Path, progress: TransferProgress) -> int:
    """Download ENTRY to TARGET through a verified temp file; the bytes received."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, received = hashlib.sha1(), 0
    fd, temp = _open_temp(target)
    with os.fdopen(fd, "wb") as out:  # closing it frees the lock: the temp is renamed or removed before
        try:
            with api.download(kind, record_id, entry["filename"], int(entry["version"])) as blocks:
                for block in blocks:
                    out.write(block)
                    digest.update(block)
                    received += len(block)
                    progress.advance(bytes_done=len(block))
            if digest.hexdigest() != entry["checksum"]:
                raise RepositoryError(f"{entry['filename']}: downloaded bytes do not match checksum "
                                      f"{entry['checksum']}")
            out.flush()
            os.fchmod(out.fileno(), _file_mode())  # the temp is 0600; the file gets what `cp` would give it
            os.replace(temp, target)
        except BaseException as exc:
            temp.unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.filename is None and exc.errno in OUT_OF_ROOM:  # a write's: say where
                raise OSError(exc.errno, f"{exc.strerror} writing {target}: free some room or choose another --out "
                              "(the files already downloaded are kept, and skipped when it is run again)") from None
            raise
    return received


class VersionFiles:
    """The files of one published version, read whole and checked against their SHA-1s."""

    def __init__(self, api: ApiClient, kind: str, name: str, version: int | None):
        self._api, self.kind = api, kind
        self.record = parse_record(kind, api.record_by_name(kind, name))
        self.version = published_version(self.record, version)
        self.entries = {e["filename"]: e for e in api.files(kind, self.record.id, self.version)}

    def read(self, path: str) -> bytes:
        entry = self.entries.get(path)
        if entry is None:
            raise NotFound(f"{path}: not a file of {self.record.name} v{self.version}", 404)
        with self._api.download(self.kind, self.record.id, path, int(entry["version"])) as blocks:
            data = b"".join(blocks)
        if hashlib.sha1(data).hexdigest() != entry["checksum"]:
            raise RepositoryError(f"{path}: downloaded bytes do not match checksum {entry['checksum']}")
        return data


def present_digests(paths: list[Path], folder: Path) -> dict[Path, str]:
    """SHA-1 of those PATHS that exist as files, through the hash cache (a second `get` reads nothing)."""
    stats = {}
    for path in paths:
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        stats[path] = file_key(str(path.absolute()), st)
    if not stats:
        return {}
    cache = HashCache()
    try:
        digests = cache.digests(list(stats.values()), under=str(folder.absolute()))
    finally:
        cache.close()
    return {path: digests[key] for path, key in stats.items()}


def published_version(record: Record, version: int | None) -> int:
    """VERSION if RECORD has published it (default: its latest); NotFound naming the versions it has."""
    published = [v.number for v in record.published]
    if version is None:
        if not published:
            raise NotFound(f"{record.name} has no published version yet", 404)
        return published[-1]
    if version not in published:
        raise NotFound(f"{record_noun(record.kind)} version doesn't exist: {record.name} has versions "
                       f"{', '.join(map(str, published)) or 'none'}", 404)
    return version


def download_version(api: ApiClient, kind: str, name: str, version: int | None, out: Path,
                     progress: TransferProgress | None = None) -> DownloadResult:
    """Files of NAME's VERSION (default: latest published) into OUT/NAME/vN/."""
    progress = progress or TransferProgress()
    record = parse_record(kind, api.record_by_name(kind, name))
    version = published_version(record, version)
    folder = Path(out) / name / f"v{version}"
    entries = api.files(kind, record.id, version)
    targets = [(entry, folder / validate_file_path(entry["filename"])) for entry in entries]  # checked: stays in FOLDER
    present = present_digests([target for _, target in targets], folder)
    todo = [(entry, target) for entry, target in targets if present.get(target) != entry["checksum"]]
    progress.start(len(todo), sum(int(e.get("size") or 0) for e, _ in todo))
    folder.mkdir(parents=True, exist_ok=True)

    def fetch(item: tuple[dict, Path]) -> int:
        received = _fetch(api, kind, record.id, item[0], item[1], progress)
        progress.advance(files=1)
        return received

    received = sum(in_parallel(fetch, todo, PARALLEL_FILES))
    return DownloadResult(folder, version, len(todo), len(entries) - len(todo), received)
