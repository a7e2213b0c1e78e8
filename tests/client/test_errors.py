"""Error mapping: HTTP answers of our server and of the official one (409 for everything) to typed errors."""

from __future__ import annotations

import errno

import pytest

from eotdlfs.fs.errors import errno_for
from eotdlfs.client.errors import BadRequest, Conflict, Forbidden, NotFound, ServerError, TooLarge, Unauthorized, error_for_status


@pytest.mark.parametrize(
    "status, detail, cls, code",
    [
        (404, "Dataset doesn't exist", NotFound, errno.ENOENT),
        (409, "Dataset doesn't exist", NotFound, errno.ENOENT),  # the official server
        (409, "Model version doesn't exist", NotFound, errno.ENOENT),
        (409, "File doesn't exist", NotFound, errno.ENOENT),
        (409, "Upload Id not found.", NotFound, errno.ENOENT),
        (409, "Dataset already exists", Conflict, errno.EEXIST),
        (401, "Invalid token", Unauthorized, errno.EACCES),
        (403, "You are not the owner of this dataset", Forbidden, errno.EACCES),
        (400, "Checksum mismatch.", BadRequest, errno.EINVAL),
        (422, "name: must be 3 to 45 characters long", BadRequest, errno.EINVAL),
        (413, "Batch too large", TooLarge, errno.EFBIG),
        (500, "Internal Server Error", ServerError, errno.EIO),
    ],
)
def test_status_and_detail_give_the_error_and_errno(status, detail, cls, code):
    error = error_for_status(status, detail)
    assert type(error) is cls
    assert (errno_for(error), error.status, str(error)) == (code, status, detail)
