"""The files of a local folder as `SourceFile`s, with SHA-1s from the hash cache.

A version holds what `cp -rL FOLDER copy` would copy, and never a byte from outside FOLDER
(a version is public: `ln -s /etc/shadow x` in a folder must not publish the password file):
- every regular file below the folder, hidden files and `metadata.yml` included;
- a symlink whose target, fully resolved (`os.path.realpath`), is inside the folder is
  followed: a link to a file gives that file's bytes under the link's path (the repository
  stores the bytes once), a link to a directory gives its files under the link's path;
- a symlink that leads outside the folder, that dangles, or that loops (to itself, or to
  a directory containing it) is an error naming the link and where it points, raised by
  the scan, before the server is asked anything;
- a path the repository refuses (a control character, bytes that are not UTF-8, ...) is an
  error naming it, raised by the scan too, before a byte of the folder is hashed.
Sources carry the resolved path of their bytes, never a link: the engine refuses any
source that is a symlink (`engine.check_local_sources`), so no caller reads through one.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Container
from pathlib import Path

from eotdlfs.client.hashcache import FileKey, HashCache, file_key
from eotdlfs.client.ingest.plan import SourceFile
from eotdlfs.paths import RefusedSymlink, resolve_inside, validate_file_path

__all__ = ["RefusedSymlink", "scan_folder"]


def _walk(root: Path) -> list[tuple[str, Path, os.stat_result]]:
    """(record path, real path, stat) of every file below ROOT, a real path, links followed as above."""
    found: list[tuple[str, Path, os.stat_result]] = []
    # (real directory, its record path prefix, the real directories walked down to it)
    pending: list[tuple[Path, str, tuple[Path, ...]]] = [(root, "", (root,))]
    while pending:
        directory, prefix, walked = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                rel, link = prefix + entry.name, entry.is_symlink()
                path = resolve_inside(Path(entry.path), root) if link else Path(entry.path)
                st = path.stat() if link else entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    if link and any(d.is_relative_to(path) for d in walked):
                        raise RefusedSymlink(f"{entry.path}: symlink to {os.readlink(entry.path)} is a loop "
                                             "(it leads to a folder that contains it)")
                    pending.append((path, rel + "/", (*walked, path)))
                elif stat.S_ISREG(st.st_mode):
                    found.append((validate_file_path(rel), path, st))
                else:
                    raise OSError(f"{entry.path}: not a regular file")
    found.sort(key=lambda item: item[0])
    return found


def scan_folder(folder: Path, cache: HashCache, skip: Container[str] = ()) -> list[SourceFile]:
    """Every file below FOLDER but the paths in SKIP, with its size and SHA-1 (read only when the
    cache does not know it)."""
    root = Path(os.path.realpath(folder))
    files = [file for file in _walk(root) if file[0] not in skip]
    keys: list[FileKey] = [file_key(str(path), st) for _, path, st in files]
    digests = cache.digests(keys, under=str(root))
    return [
        SourceFile(path=rel, size=key[1], checksum=digests[key], local_path=path)
        for (rel, path, _), key in zip(files, keys)
    ]
