"""The rules for file paths of a dataset or model: relative, '/'-separated, no tricks; and on
disk, nothing read from outside the folder being ingested.

Server and client both apply the first: to the paths they are sent and to the paths they are given.
The second is the one rule for every local folder an ingest reads (the folder scan of a Q0
dataset, the hrefs of a STAC catalog): a symlink is followed only when its real path is inside.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

MAX_PATH = 1024
MAX_COMPONENT = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class BadPath(ValueError):
    """A file path a record may not contain; the message says why."""


class PathTooLong(BadPath):
    """A file path, or one of its components, longer than the repository keeps (ENAMETOOLONG to a writer)."""


def validate_file_path(path: object) -> str:
    """PATH if it is a clean relative path such as 'a/b.tif'; BadPath otherwise."""
    if not isinstance(path, str) or not path:
        raise BadPath("file path is empty")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH:
        raise PathTooLong(f"file path is longer than {MAX_PATH} bytes")
    if not_utf8(path):
        # no repository, JSON or SQLite text can hold it, and a bare UnicodeEncodeError later
        # names neither the file nor the rule
        raise BadPath(f"file path {_raw(path)} is not UTF-8 text; rename it")
    if _CONTROL.search(path):
        raise BadPath(f"file path {path!r} contains a control character")
    if "\\" in path:
        raise BadPath(f"file path {path!r} contains a backslash")
    if path.startswith("/"):
        raise BadPath(f"file path {path!r} is absolute")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise BadPath(f"file path {path!r} has an empty, '.' or '..' component")
        if too_long(part):
            raise PathTooLong(f"file path {path!r} has a component longer than {MAX_COMPONENT} bytes")
    return path


def not_utf8(path: str) -> bool:
    """Whether PATH holds a surrogate: a name whose bytes are not UTF-8, as os.fsdecode gives it."""
    return _SURROGATE.search(path) is not None


def _raw(path: str) -> str:
    """PATH as the bytes a disk holds (b'caf\\xe9.txt'), where os.fsdecode made it; else its repr."""
    try:
        return repr(path.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:  # a surrogate no disk name decodes to (JSON's "\\ud800")
        return repr(path)


def too_long(component: str) -> bool:
    """Whether COMPONENT (one name of a path) is longer than a name may be, in bytes as a disk counts them."""
    return len(component.encode("utf-8", "surrogatepass")) > MAX_COMPONENT


class RefusedSymlink(OSError):
    """A symlink in a folder being ingested that may not be followed."""


def is_under(path: str, top: str) -> bool:
    """PurePath.is_relative_to for normalised absolute path strings, without pathlib's parsing cost."""
    return path == top or path.startswith(top.rstrip("/") + "/")


def resolve_inside(link: str | Path, root: str | Path) -> Path:
    """The real path LINK leads to, when it lies inside ROOT (a real path); else `RefusedSymlink` naming both."""
    points_to = os.readlink(link)
    try:
        target = os.path.realpath(link, strict=True)
    except FileNotFoundError:
        raise RefusedSymlink(f"{link}: dangling symlink (to {points_to}, which does not exist)") from None
    except OSError as exc:
        why = "is a symlink loop" if exc.errno == errno.ELOOP else f"cannot be resolved ({exc.strerror})"
        raise RefusedSymlink(f"{link}: symlink to {points_to} {why}") from None
    if not is_under(target, str(root)):
        resolved = "" if points_to == target else f", which resolves to {target},"
        raise RefusedSymlink(f"{link}: symlink to {points_to}{resolved} leads outside {root}; an ingest takes "
                             "only files inside the folder (copy the file in to include it)")
    return Path(target)
