"""Encoded multipart parts (our route 11 extension), for sparse files: `deflate`, a part sent as a
zlib stream (RFC 1950) and inflated as it is read, and `zeros`, a part of SIZE zero bytes sent as
nothing (a hole: the server stores it as a hole too, without reading or hashing a byte).

A part is at most the body limit once decoded, however small it was on the wire, so a deflate
bomb costs the server no more than an uncompressed part of that size would.
"""

from __future__ import annotations

import zlib
from typing import BinaryIO

from eotdlfs.server.errors import ApiError, bad_request

_READ = 64 * 1024


class Inflating:
    """A read-only stream of SOURCE's zlib stream inflated; 413 past LIMIT bytes, 400 when damaged."""

    def __init__(self, source: BinaryIO, limit: int):
        self._source, self._limit = source, limit
        self._start = source.tell()
        self.seek(0)

    def seek(self, offset: int) -> None:
        """Back to the start (only): the S3 blob store reads a part twice, to hash it, then to send it."""
        if offset != 0:
            raise ValueError("an inflating stream seeks to its start only")
        self._source.seek(self._start)
        self._inflater = zlib.decompressobj()
        self._out = 0

    def read(self, n: int = -1) -> bytes:
        """Up to N inflated bytes (some until the end); with N < 0 all that is left, as a file reads:
        boto3 reads the body of a small object whole."""
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(_READ), b""))
        while True:
            pending = self._inflater.unconsumed_tail
            if not pending:
                if self._inflater.eof:
                    return b""
                pending = self._source.read(_READ)
                if not pending:
                    raise bad_request("The deflated part ends before its zlib stream does")
            try:
                data = self._inflater.decompress(pending, n)
            except zlib.error as exc:
                raise bad_request(f"The deflated part is damaged ({exc})") from None
            self._out += len(data)
            if self._out > self._limit:
                raise ApiError(413, f"The part inflates to more than {self._limit} bytes")
            if data:
                return data
