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


def is_failure(exc: BaseException) -> bool:
    """Whether EXC is a failure worth a user's attention (a repository or content failure, or an
    unexpected exception), not an ordinary errno answer (ENOENT, EROFS, ...)."""
    if isinstance(exc, (RepositoryError, ContentMismatch)):
        return not isinstance(exc, NotFound)
    return not isinstance(exc, OSError)


def logged_errno(exc: BaseException, path: str | None = None) -> int:
    """`errno_for(EXC)`, logging a failure (`is_failure`) with the PATH it met, an unexpected
    exception with its trace."""
    code = errno_for(exc)
    where, name = f"{path}: " if path else "", errno.errorcode.get(code, code)
    if isinstance(exc, (RepositoryError, ContentMismatch)) and is_failure(exc):
        log.warning("%s%s; %s -> %s", where, exc, type(exc).__name__, name)
    elif is_failure(exc):
        log.error("%sunexpected %s -> %s", where, type(exc).__name__, name, exc_info=exc)
    return code
