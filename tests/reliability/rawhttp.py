"""Requests sent byte for byte as written (no URL normalisation, no header checks), for hostile-input tests."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit


def raw_request(url: str, request: bytes, timeout: float = 30.0, max_bytes: int = 64 * 1024 * 1024) -> tuple[int, bytes]:
    """Send REQUEST (a whole HTTP/1.1 message) to URL's host; (status, body). Status 0: the server closed without answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered (or gave up) before reading it all: read what it said
            pass
        chunks, total = [], 0
        while total < max_bytes:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
            total += len(data)
    answer = b"".join(chunks)
    if not answer.startswith(b"HTTP/1."):
        return 0, answer
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def get(url: str, path: bytes, headers: dict[bytes, bytes] | None = None, method: bytes = b"GET") -> tuple[int, bytes]:
    """METHOD of the raw PATH (bytes, sent as is) on URL's server."""
    host = urlsplit(url).netloc.encode()
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: " + host, b"Connection: close"]
    lines += [k + b": " + v for k, v in (headers or {}).items()]
    return raw_request(url, b"\r\n".join(lines) + b"\r\n\r\n")
