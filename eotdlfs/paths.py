"""The rule for file paths inside a dataset or model: relative, '/'-separated, no tricks.

Server and client both apply it: to the paths they are sent and to the paths they are given.
"""

from __future__ import annotations

import re

MAX_PATH = 1024
MAX_COMPONENT = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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
    if _CONTROL.search(path):
        raise BadPath(f"file path {path!r} contains a control character")
    if "\\" in path:
        raise BadPath(f"file path {path!r} contains a backslash")
    if path.startswith("/"):
        raise BadPath(f"file path {path!r} is absolute")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise BadPath(f"file path {path!r} has an empty, '.' or '..' component")
        if len(part.encode("utf-8", "surrogatepass")) > MAX_COMPONENT:
            raise PathTooLong(f"file path {path!r} has a component longer than {MAX_COMPONENT} bytes")
    return path
