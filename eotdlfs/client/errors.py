"""Repository errors as typed exceptions, each carrying the server's `detail` and an errno.

The filesystem turns these into FUSE errors in one place (`eotdlfs.fs.errors`); the CLI
prints `str(exc)` as its one-line message.
"""

from __future__ import annotations

import errno as _errno


class RepositoryError(Exception):
    """Any failure talking to a repository. `status` is the HTTP status, 0 when none came back."""

    errno = _errno.EIO

    def __init__(self, detail: str, status: int = 0):
        super().__init__(detail)
        self.detail = detail
        self.status = status


class BadRequest(RepositoryError):
    errno = _errno.EINVAL


class Unauthorized(RepositoryError):
    errno = _errno.EACCES


class Forbidden(RepositoryError):
    errno = _errno.EACCES


class NotFound(RepositoryError):
    errno = _errno.ENOENT


class Conflict(RepositoryError):
    errno = _errno.EEXIST


class VersionConflict(Conflict):
    """A version was published after the one a writer based its draft on; nothing of the draft was published."""

    def __init__(self, noun: str, latest: int, base: int):
        based = f"version {base}" if base else "no version"
        super().__init__(f"{noun} version {latest} was published meanwhile (this ingest was based on {based}); "
                         "run it again to ingest onto the new version", 409)
        self.latest = latest
        self.base = base


class TooLarge(RepositoryError):
    errno = _errno.EFBIG


class ServerError(RepositoryError):
    errno = _errno.EIO


class Unreachable(RepositoryError):
    """No answer: connection refused, reset or timed out."""

    errno = _errno.ENOTCONN


_BY_STATUS = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound,
              409: Conflict, 413: TooLarge, 422: BadRequest}


def error_for_status(status: int, detail: str) -> RepositoryError:
    """The exception for an HTTP error answer.

    The official EOTDL server answers 409 for every failure, so a 409 whose detail says
    something "doesn't exist" (`Dataset doesn't exist`, `File doesn't exist`, ...) or
    "not found" is a NotFound, whatever the status says.
    """
    lowered = detail.rstrip(". ").lower()
    if status == 409 and (lowered.endswith("doesn't exist") or lowered.endswith("not found")):
        return NotFound(detail, status)
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else RepositoryError)
    return cls(detail, status)


class NothingToIngest(Exception):
    """An ingest found nothing new, changed or removed since the latest version: no version made."""

    def __init__(self, name: str, version: int):
        super().__init__(f"{name}: nothing changed since version {version}")
        self.name = name
        self.version = version
