"""The encodings of a multipart part on the wire (route 11's `encoding` extension), shared by the
client that sends them and the server that decodes them: they must agree on the MD5 of a hole."""

from __future__ import annotations

import functools
import hashlib

ENCODINGS = ("deflate", "zeros")  # `deflate`: a zlib stream; `zeros`: SIZE zero bytes sent as nothing


@functools.lru_cache(maxsize=8)
def zeros_md5(size: int) -> str:
    """The MD5 of SIZE zero bytes (parts of one upload share a size: computed once)."""
    return hashlib.md5(bytes(size)).hexdigest()
