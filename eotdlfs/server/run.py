"""Running the server: in the foreground (`eotdlfs serve`) or in a daemon thread (embedded, benchmarks)."""

from __future__ import annotations

import functools
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from eotdlfs.server.app import create_app
from eotdlfs.server.limits import Limits
from eotdlfs.server.protocol import bounded_head
from eotdlfs.server.rangeprotocol import range_protocol

STARTUP_TIMEOUT_S = 30.0
GRACEFUL_STOP_S = 5


def _config(root: Path, host: str, port: int, db_url: str | None = None, blobs_url: str | None = None,
            redirect_downloads: bool = False, private: bool = False, **tls: str | None) -> uvicorn.Config:
    # httptools (its heads bounded: `protocol`) and uvloop, dependencies, over h11 and asyncio. Access logs, and a
    # `server` header each client parses, cost time per request (a mount sends one per cold read).
    # Stopping waits at most GRACEFUL_STOP_S for requests in flight (a stalled download must not hang it).
    # Small ranges of local blobs are answered by the protocol itself (`rangeprotocol`).
    limits = Limits.from_env()
    app = create_app(Path(root), limits, db_url=db_url, blobs_url=blobs_url, redirect_downloads=redirect_downloads,
                     private=private)
    protocol = functools.partial(bounded_head(range_protocol(app.state.downloads)),
                                 max_head_bytes=limits.max_head_bytes, head_timeout_s=limits.head_timeout_s,
                                 send_timeout_s=limits.send_timeout_s, body_timeout_s=limits.body_timeout_s)
    return uvicorn.Config(app, host=host, port=port, log_level="warning",
                          access_log=False, server_header=False, timeout_keep_alive=30,
                          timeout_graceful_shutdown=GRACEFUL_STOP_S, http=protocol, **tls)


def serve(root: Path, host: str = "127.0.0.1", port: int = 8000, db_url: str | None = None,
          blobs_url: str | None = None, redirect_downloads: bool = False) -> None:
    """Serve ROOT (metadata in DB_URL, blobs in BLOBS_URL, when given) until interrupted."""
    uvicorn.Server(_config(root, host, port, db_url, blobs_url, redirect_downloads)).run()


@dataclass
class RunningServer:
    """A server on a daemon thread; `url` ends with '/'."""

    server: uvicorn.Server
    thread: threading.Thread
    host: str
    port: int
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/"

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def start_in_thread(root: Path, host: str = "127.0.0.1", port: int = 0, ssl_certfile: str | None = None,
                    ssl_keyfile: str | None = None, private: bool = False) -> RunningServer:
    """Start serving ROOT on a daemon thread; returns once it accepts connections (port 0: any free port).
    Over https when given SSL_CERTFILE (the certificate chain, PEM) and SSL_KEYFILE (its key); PRIVATE: as
    `create_app`'s."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(_config(root, host, sock.getsockname()[1], private=private, ssl_certfile=ssl_certfile,
                                    ssl_keyfile=ssl_keyfile))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="eotdlfs-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the repository server on {host}:{sock.getsockname()[1]} did not start")
        time.sleep(0.01)
    return RunningServer(server, thread, host, sock.getsockname()[1], "https" if ssl_certfile else "http")
