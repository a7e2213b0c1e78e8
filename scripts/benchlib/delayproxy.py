"""A TCP proxy on 127.0.0.1 that delays every byte by a fixed time each way: a network's latency
without its bandwidth limit, so round trips show as they would on a real link.

Run as its own process (`python -m benchlib.delayproxy`, see `DelayProxy`) so it does not share
the bench's GIL. Each chunk read from one side is written to the other DELAY seconds after
it arrived; chunks keep their order, and a bounded queue per direction pushes back on a
sender that runs ahead (as a full TCP window would).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from benchlib.processes import LocalHttpServer, free_port

CHUNK = 256 * 1024
QUEUED_CHUNKS = 256  # at most 64 MiB in flight per direction


class DelayProxy(LocalHttpServer):
    """The proxy as our child: connections to `url` reach UPSTREAM_PORT, DELAY_S later each way."""

    def __init__(self, upstream_port: int, delay_s: float, log: Path):
        port = free_port()
        argv = [sys.executable, "-m", "benchlib.delayproxy", "--port", str(port),
                "--upstream-port", str(upstream_port), "--delay", str(delay_s)]
        super().__init__(argv, port, log)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue = asyncio.Queue(QUEUED_CHUNKS)

    async def receive() -> None:
        while data := await reader.read(CHUNK):
            await chunks.put((loop.time() + delay_s, data))
        await chunks.put((loop.time() + delay_s, b""))

    async def send() -> None:
        while True:
            due, data = await chunks.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not data:
                writer.write_eof() if writer.can_write_eof() else writer.close()
                return
            writer.write(data)
            await writer.drain()

    try:
        await asyncio.gather(receive(), send())
    except (ConnectionError, OSError):
        writer.close()


async def _serve(port: int, upstream_port: int, delay_s: float) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", upstream_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pump(client_r, server_w, delay_s), _pump(server_r, client_w, delay_s))
        for w in (client_w, server_w):
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchlib.delayproxy", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream-port", type=int, required=True)
    p.add_argument("--delay", type=float, required=True, help="seconds added each way")
    args = p.parse_args(argv)
    asyncio.run(_serve(args.port, args.upstream_port, args.delay))
    return 0


if __name__ == "__main__":
    sys.exit(main())
