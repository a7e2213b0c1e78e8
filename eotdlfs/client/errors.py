"""HTTP answers as the repository's domain errors (`eotdlfs.repository`), each carrying the server's `detail`.

The filesystem turns these into errno values in one place (`eotdlfs.fs.errors.errno_for`);
the CLI prints `str(exc)` as its one-line message.
"""

from __future__ import annotations

import re

import requests
import urllib3

from eotdlfs.repository import (BadRequest, Conflict, ContentMismatch, Forbidden, NothingToIngest, NotFound,
                                RepositoryError, TooLarge, Unauthorized, Unreachable, VersionConflict)

__all__ = ["BadRequest", "Conflict", "ContentMismatch", "Forbidden", "NothingToIngest", "NotFound",
           "RepositoryError", "ServerError", "TooLarge", "Unauthorized", "Unreachable", "VersionConflict",
           "error_for_status", "failure_reason", "not_trusted", "timed_out"]


class ServerError(RepositoryError):
    """A 5xx answer."""


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


def timed_out(exc: Exception) -> bool:
    """True when EXC is a read that waited past the read timeout: requests' Timeout, urllib3's own
    (the quick path's), or urllib3's wrapped in a requests ConnectionError."""
    return isinstance(exc, (requests.Timeout, urllib3.exceptions.ReadTimeoutError)) or any(
        isinstance(a, urllib3.exceptions.ReadTimeoutError) for a in exc.args)


# what OpenSSL says when it refuses a server's certificate, then why ('unable to get local issuer
# certificate', 'Hostname mismatch, ...'), up to the source location it appends ('(_ssl.c:1000)')
_REFUSED_CERTIFICATE = re.compile(r"certificate verify failed: ([^(]*)")


def not_trusted(exc: Exception) -> bool:
    """True when EXC is a TLS handshake that refused the server's certificate: no retry can change that."""
    return _REFUSED_CERTIFICATE.search(str(exc)) is not None


def failure_reason(exc: Exception) -> str:
    """A short cause for a connection failure ('Connection refused', 'timed out', ...)."""
    text = str(exc)
    refused = _REFUSED_CERTIFICATE.search(text)
    if refused:
        return (f"its TLS certificate is not trusted: {refused.group(1).strip()}; "
                "REQUESTS_CA_BUNDLE names a CA bundle to trust")
    for marker in ("Connection refused", "timed out", "Name or service not known", "Connection reset",
                   "Connection aborted"):
        if marker in text:
            return marker
    return exc.__class__.__name__
