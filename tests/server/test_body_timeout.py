"""A request whose body stops coming is answered 408 and closed after EOTDLFS_BODY_TIMEOUT_S; a slow
but steady sender never is. Before, such a client held its connection, the application's task and
the part of the body parsed so far (up to 1 MiB of a multipart file in memory) for good."""

from __future__ import annotations

import hashlib
import socket
import time

import pytest
from serverapi import Api, one_answer, sha1

BODY_TIMEOUT_S = 2
PART = b"p" * 5000


@pytest.fixture
def server(server_factory):
    return server_factory(env={"EOTDLFS_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)})


@pytest.fixture
def chunk_request(server, unique_name) -> tuple[str, bytes, bytes]:
    """An upload id, and the head and body of its route 11 upload of PART as a client sends them."""
    api = Api(server, "datasets", server.token("alice"))
    rid = api.create(unique_name("slowbody"))
    upload_id = api.post(f"datasets/{rid}/uploadId", json={"filname": "f", "checksum": sha1(PART)}).json()["upload_id"]
    fields = [(b"part_number", b"1"), (b"checksum", hashlib.md5(PART).hexdigest().encode())]
    body = b"".join(b'--zz\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % field for field in fields)
    body += b'--zz\r\nContent-Disposition: form-data; name="file"; filename="p"\r\n\r\n' + PART + b"\r\n--zz--\r\n"
    head = (b"POST /datasets/chunk/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            b"Content-Type: multipart/form-data; boundary=zz\r\nContent-Length: %d\r\n\r\n"
            % (upload_id.encode(), server.token("alice").encode(), len(body)))
    return upload_id, head, body


@pytest.mark.parametrize("sent", ["head-only", "half-the-body"])
def test_a_body_that_stops_coming_is_answered_408_and_closed(server, chunk_request, sent: str) -> None:
    upload_id, head, body = chunk_request
    with socket.create_connection(("127.0.0.1", server.port), timeout=BODY_TIMEOUT_S * 5 + 10) as sock:
        sock.sendall(head + (body[:len(body) // 2] if sent == "half-the-body" else b""))
        answer = one_answer(sock)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"No byte of the request's body for 2 s" in answer
        assert sock.recv(1) == b""  # closed
    assert server.blob_store().parts(upload_id) == []


def test_a_slow_but_steady_body_is_taken_whole(server, chunk_request) -> None:
    _, head, body = chunk_request
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head)
        pieces = [body[i:i + len(body) // 8 + 1] for i in range(0, len(body), len(body) // 8 + 1)]
        for piece in pieces:  # a piece every half second: three timeouts in all, none without a byte
            time.sleep(BODY_TIMEOUT_S * 3 / len(pieces))
            sock.sendall(piece)
        answer = one_answer(sock)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert answer.endswith(b'{"message":"Chunk uploaded"}')
