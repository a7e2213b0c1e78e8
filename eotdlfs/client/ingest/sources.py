"""The files of a local folder as `SourceFile`s, with SHA-1s from the hash cache.

Every regular file below the folder is a file of the version, hidden files and
`metadata.yml` included; only directories are skipped. Symlinks to files are followed
(their target's bytes are ingested under the link's path); symlinks to directories are
not descended into, so a link cycle cannot make the scan endless. A dangling link or an
unreadable entry is an error naming it, never silently skipped.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from eotdlfs.client.hashcache import FileKey, HashCache
from eotdlfs.client.ingest.plan import SourceFile


def _walk(folder: Path) -> list[tuple[str, Path, os.stat_result]]:
    found: list[tuple[str, Path, os.stat_result]] = []
    pending = [(folder, "")]
    while pending:
        directory, prefix = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                rel = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    pending.append((Path(entry.path), rel + "/"))
                    continue
                try:
                    st = entry.stat(follow_symlinks=True)
                except FileNotFoundError:
                    raise OSError(f"{entry.path}: dangling symlink") from None
                if stat.S_ISREG(st.st_mode):
                    found.append((rel, Path(entry.path), st))
                elif not stat.S_ISDIR(st.st_mode):  # a symlink to a directory is skipped, not followed
                    raise OSError(f"{entry.path}: not a regular file")
    found.sort(key=lambda item: item[0])
    return found


def scan_folder(folder: Path, cache: HashCache) -> list[SourceFile]:
    """Every file below FOLDER, with its size and SHA-1 (read only when the cache does not know it)."""
    folder = Path(folder).absolute()
    files = _walk(folder)
    keys: list[FileKey] = [(str(path), st.st_size, st.st_mtime_ns) for _, path, st in files]
    digests = cache.digests(keys, under=str(folder))
    return [
        SourceFile(path=rel, size=key[1], checksum=digests[key], local_path=path)
        for (rel, path, _), key in zip(files, keys)
    ]
