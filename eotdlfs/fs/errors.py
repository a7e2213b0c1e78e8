"""The one place where any exception reaching the kernel becomes a `FuseOSError` with an errno.

fusepy turns an unknown exception into EINVAL and an OSError without errno can stop the
whole filesystem, so every callback funnels its failures through `fuse_error`.
"""

from __future__ import annotations

import errno
import logging

from fuse import FuseOSError

from eotdlfs.client.errors import NotFound, RepositoryError, Unreachable

log = logging.getLogger(__name__)


class ContentMismatch(Exception):
    """Bytes read end to end do not hash to the file's SHA-1."""


def errno_for(exc: BaseException) -> int:
    """The errno the kernel should see for EXC."""
    if isinstance(exc, FuseOSError) and exc.errno:
        return exc.errno
    if isinstance(exc, NotFound):
        return errno.ENOENT
    if isinstance(exc, Unreachable):
        # A reader of an uncached file should fail fast with a plain I/O error, not ENOTCONN
        # (which tools report as a broken mount).
        return errno.EIO
    if isinstance(exc, RepositoryError):
        return exc.errno or errno.EIO
    if isinstance(exc, ContentMismatch):
        return errno.EIO
    if isinstance(exc, OSError) and isinstance(exc.errno, int) and exc.errno > 0:
        return exc.errno
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return errno.EIO
    return errno.EIO


def fuse_error(exc: BaseException) -> FuseOSError:
    """A FuseOSError for EXC. Repository and content failures are logged; an unexpected
    exception is logged with its trace; ordinary errno answers (ENOENT, EROFS, ...) are not."""
    code = errno_for(exc)
    if isinstance(exc, (RepositoryError, ContentMismatch)) and not isinstance(exc, NotFound):
        log.warning("%s -> %s: %s", type(exc).__name__, errno.errorcode.get(code, code), exc)
    elif not isinstance(exc, OSError):
        log.error("unexpected %s -> %s", type(exc).__name__, errno.errorcode.get(code, code),
                  exc_info=exc)
    return FuseOSError(code)
