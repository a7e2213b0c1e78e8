"""Unpacking an ingest batch (a zip) safely: every entry checked and hashed before anything is kept.

Entry names must be clean relative paths (no absolute, '..', backslash, NUL, duplicates,
directories or symlinks). Sizes are counted while decompressing, never taken from the
zip's headers, and capped in total, per entry ratio and entry count (zip bombs). Entries are
stored or deflated only: Python's bzip2 and LZMA readers inflate every compressed byte of a
read in one call (a 100-byte bzip2 entry is 128 MiB of memory) before a cap can look.
"""

from __future__ import annotations

import stat
import struct
import zipfile
from typing import BinaryIO

from eotdlfs.server.blobs import Blobs, Staged
from eotdlfs.server.errors import CHECKSUM_MISMATCH, ApiError, bad_request
from eotdlfs.server.limits import Limits
from eotdlfs.paths import BadPath, validate_file_path

_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # the two that zipfile inflates in bounded steps


def _refuse_too_many_entries(source: BinaryIO, limit: int) -> None:
    """413 when the central directory holds more than LIMIT entries, counted by walking its headers.

    zipfile reads the whole directory into memory and makes an object of every entry before one
    can be counted: ~450 bytes and 10 us an entry, and a 1 GiB batch of bare headers (47 bytes
    each) held 20 million of them. The end record's own count is not trusted: zipfile walks the
    directory's bytes whatever it says. A zip this walk cannot follow is left for zipfile to refuse.
    """
    try:
        end = zipfile._EndRecData(source)  # the end record, zip64's too (stable since Python 2)
    except (OSError, struct.error):
        return
    if not end:
        return
    size, position = end[zipfile._ECD_SIZE], end[zipfile._ECD_LOCATION] - end[zipfile._ECD_SIZE]
    if end[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:
        position -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator
    walked = entries = 0
    while walked + zipfile.sizeCentralDir <= size and position >= 0:
        source.seek(position + walked)
        header = source.read(zipfile.sizeCentralDir)
        if len(header) < zipfile.sizeCentralDir or header[:4] != zipfile.stringCentralDir:
            return
        entries += 1
        if entries > limit:
            raise ApiError(413, f"The batch zip has more than {limit} entries")
        name, extra, comment = struct.unpack_from("<3H", header, 28)
        walked += zipfile.sizeCentralDir + name + extra + comment


def _check_entries(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """Every entry's name and kind checked; their number was (`_refuse_too_many_entries`)."""
    infos = zf.infolist()
    if not infos:
        raise bad_request("The batch zip has no entries")
    seen: set[str] = set()
    for info in infos:
        name = info.orig_filename  # zipfile cuts `filename` at a NUL; the original keeps it
        mode = info.external_attr >> 16
        if name.endswith("/") or stat.S_ISDIR(mode):
            raise bad_request(f"zip entry {name!r} is a directory; only files may be ingested")
        if stat.S_ISLNK(mode):
            raise bad_request(f"zip entry {name!r} is a symbolic link")
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
            raise bad_request(f"zip entry {name!r} is not a regular file")
        if info.compress_type not in _METHODS:
            raise bad_request(f"zip entry {name!r}: compression method {info.compress_type} is not accepted;"
                              " store or deflate the entries")
        if info.flag_bits & 0x1:
            raise bad_request(f"zip entry {name!r} is encrypted")
        try:
            validate_file_path(name)
        except BadPath as exc:
            raise bad_request(f"zip entry: {exc}") from None
        if name in seen:
            raise bad_request(f"zip entry {name!r} appears twice")
        seen.add(name)
    return infos


class _EntryGuard:
    """Aborts an entry's copy when the batch total or the entry's ratio goes over its cap."""

    def __init__(self, limits: Limits, total_before: int, info: zipfile.ZipInfo):
        self.limits, self.total_before, self.info = limits, total_before, info

    def __call__(self, size: int) -> None:
        lim = self.limits
        if self.total_before + size > lim.zip_max_total_bytes:
            raise ApiError(413, f"The batch unpacks to more than {lim.zip_max_total_bytes} bytes")
        if size > lim.zip_ratio_floor_bytes and size > lim.zip_max_ratio * max(self.info.compress_size, 1):
            raise ApiError(413, f"zip entry {self.info.filename!r} expands more than {lim.zip_max_ratio} times")


def unpack_batch(source: BinaryIO, checksums: list[str], blobs: Blobs,
                 limits: Limits) -> list[tuple[str, Staged]]:
    """Each entry's path and staged bytes, in zip order; raises ApiError with nothing kept."""
    staged: list[tuple[str, Staged]] = []
    try:
        _refuse_too_many_entries(source, limits.zip_max_entries)
        try:
            zf = zipfile.ZipFile(source)
        except Exception as exc:  # noqa: BLE001 - parsing client bytes: BadZipFile, NotImplementedError,
            # struct and EOF errors all mean the same thing here
            raise bad_request(f"The batch is not a valid zip file ({exc})") from None
        with zf:
            infos = _check_entries(zf)
            if len(checksums) != len(infos):
                raise bad_request(f"The batch has {len(infos)} files but {len(checksums)} checksums")
            total = 0
            for info, checksum in zip(infos, checksums):
                try:
                    with zf.open(info) as entry:
                        blob = blobs.stage(entry, check=_EntryGuard(limits, total, info))
                except ApiError:  # a cap hit while decompressing
                    raise
                except Exception as exc:  # noqa: BLE001 - damaged data: BadZipFile (CRC), zlib/lzma errors,
                    # bz2's errno-less OSError, EOFError, NotImplementedError (method) all mean the same
                    if isinstance(exc, OSError) and exc.errno is not None:
                        raise  # our disk (full, I/O error): not the client's fault
                    raise bad_request(f"zip entry {info.filename!r} cannot be read ({exc})") from None
                staged.append((info.filename, blob))
                total += blob.size
                if blob.sha1 != checksum:
                    raise bad_request(CHECKSUM_MISMATCH)
    except BaseException:
        for _, blob in staged:
            blob.discard()
        raise
    return staged
