"""Reading an answer's body whole, with its length checked: ranges straight into page-aligned memory.

Failures come out as requests' own exceptions (as from `iter_content`), whichever way the
body was read, so callers handle one set.
"""

from __future__ import annotations

import ctypes
import http.client
import mmap

import requests
import urllib3

from eotdlfs.repository import Arrived

DOWNLOAD_BLOCK = 1 << 20


def whole_body(response: requests.Response) -> bytes:
    """RESPONSE's body; ChunkedEncodingError when the connection ended before Content-Length bytes."""
    # `response.content` would read the body in 10 KiB pieces, in Python, holding the GIL.
    body = b"".join(response.iter_content(DOWNLOAD_BLOCK))
    announced = response.headers.get("Content-Length")
    # (a compressed body's Content-Length counts the compressed bytes, so no check then)
    if announced is not None and "Content-Encoding" not in response.headers and len(body) != int(announced):
        raise requests.exceptions.ChunkedEncodingError(f"body ended after {len(body)} of {announced} bytes")
    return body


def body_in_pages(response: requests.Response, progress: Arrived | None = None) -> memoryview:
    """RESPONSE's body read straight into fresh page-aligned memory (an anonymous mmap).

    The block cache writes such memory to disk with O_DIRECT, and no copy joins the pieces;
    failures come out as requests' own exceptions, as from `iter_content`."""
    announced = response.headers.get("Content-Length")
    if announced is None or "Content-Encoding" in response.headers:
        return memoryview(whole_body(response))
    return pages_of(response.raw, int(announced), progress)


SMALL_BODY = 256 * 1024


def page_aligned(size: int) -> memoryview:
    """SIZE bytes of fresh page-aligned memory."""
    if size <= SMALL_BODY:
        # The page-aligned part of a heap buffer: a fresh mapping costs a small range more than
        # its request (mmap, munmap and a page fault per 4 KiB: ~100 us for 64 KiB).
        buffer = bytearray(size + mmap.PAGESIZE)
        skip = -ctypes.addressof(ctypes.c_char.from_buffer(buffer)) % mmap.PAGESIZE
        return memoryview(buffer)[skip:skip + size]
    # Private (a shared anonymous mapping is shmem, whose page faults cost more), in huge
    # pages where the kernel has them: 4 page faults per 8 MiB range instead of 2,048.
    pages = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        pages.madvise(mmap.MADV_HUGEPAGE)
    return memoryview(pages)[:size]


def pages_of(raw: urllib3.HTTPResponse, size: int, progress: Arrived | None = None) -> memoryview:
    """The SIZE bytes of RAW's body in page-aligned memory (see `body_in_pages`); its connection
    goes back to the pool. PROGRESS is told (the memory, bytes so far) after each piece, so a
    reader needing only the body's start need not wait for its end."""
    body = page_aligned(size)
    # urllib3's readinto copies each piece out of a bytes of its own; the http.client
    # response under it reads from the socket straight into our buffer.
    plain = getattr(raw, "_fp", None)
    direct = isinstance(plain, http.client.HTTPResponse)
    readinto = plain.readinto if direct else raw.readinto
    got = 0
    try:
        while got < size:
            count = readinto(body[got:got + DOWNLOAD_BLOCK])
            if not count:
                raise requests.exceptions.ChunkedEncodingError(f"body ended after {got} of {size} bytes")
            got += count
            if progress is not None:
                progress(body, got)
    except (urllib3.exceptions.ProtocolError, http.client.IncompleteRead, ConnectionError) as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    except TimeoutError as exc:
        raise requests.ConnectionError(urllib3.exceptions.ReadTimeoutError(None, None, str(exc))) from exc
    except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.SSLError) as exc:
        raise requests.ConnectionError(exc) from exc
    if direct:
        raw.release_conn()  # read to its end behind urllib3's back: the connection is free again
    return body
