"""Errors the server answers with: an HTTP status and the `detail` string clients read."""

from __future__ import annotations

from eotdlfs.metadata import record_noun


class ApiError(Exception):
    """Answered as `{"detail": detail}` with STATUS."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


def bad_request(detail: str) -> ApiError:
    return ApiError(400, detail)


def record_missing(kind: str) -> ApiError:
    return ApiError(404, f"{record_noun(kind)} doesn't exist")


def record_exists(kind: str) -> ApiError:
    return ApiError(409, f"{record_noun(kind)} already exists")


def version_missing(kind: str) -> ApiError:
    return ApiError(404, f"{record_noun(kind)} version doesn't exist")


def database_timeout(seconds: int) -> ApiError:
    """The database did not answer in time (a lock held elsewhere, a stalled server): worth a retry."""
    return ApiError(503, f"the repository database did not answer within {seconds} s",
                    {"Retry-After": str(max(1, seconds // 10))})


def not_owner(kind: str) -> ApiError:
    return ApiError(403, f"You are not the owner of this {record_noun(kind).lower()}")


FILE_MISSING = "File doesn't exist"
CHECKSUM_MISMATCH = "Checksum mismatch."
UPLOAD_MISSING = "Upload Id not found."

