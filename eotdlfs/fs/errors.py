"""The one errno table: what the kernel sees for each failure that reaches a FUSE callback.

fusepy turns an unknown exception into EINVAL and an OSError without errno can stop the
whole filesystem, so every callback funnels its failures through `errno_for` (the FUSE
adapter raises the binding's error from it). Repository failures are the domain errors of
`eotdlfs.repository`; nothing here knows how they came about.
"""

from __future__ import annotations

import errno
import logging

from eotdlfs.repository import (BadRequest, Conflict, ContentMismatch, Forbidden, NotFound, RepositoryError,
                                TooLarge, Unauthorized, Unreachable)

log = logging.getLogger(__name__)

# Most specific first. An unreachable repository is a plain I/O error for a reader of an
# uncached file, not ENOTCONN (which tools report as a broken mount).
_ERRNO = ((NotFound, errno.ENOENT), (Unauthorized, errno.EACCES), (Forbidden, errno.EACCES),
          (BadRequest, errno.EINVAL), (Conflict, errno.EEXIST), (TooLarge, errno.EFBIG),
          (Unreachable, errno.EIO), (RepositoryError, errno.EIO), (ContentMismatch, errno.EIO))


def errno_for(exc: BaseException) -> int:
    """The errno the kernel should see for EXC: an OSError keeps its own, anything unknown is EIO."""
    for cls, code in _ERRNO:
        if isinstance(exc, cls):
            return code
    if isinstance(exc, OSError) and isinstance(exc.errno, int) and exc.errno > 0:
        return exc.errno
    return errno.EIO


def logged_errno(exc: BaseException) -> int:
    """`errno_for(EXC)`, logging repository and content failures and (with its trace) an unexpected
    exception; ordinary errno answers (ENOENT, EROFS, ...) are not logged."""
    code = errno_for(exc)
    if isinstance(exc, (RepositoryError, ContentMismatch)) and not isinstance(exc, NotFound):
        log.warning("%s -> %s: %s", type(exc).__name__, errno.errorcode.get(code, code), exc)
    elif not isinstance(exc, OSError):
        log.error("unexpected %s -> %s", type(exc).__name__, errno.errorcode.get(code, code),
                  exc_info=exc)
    return code
