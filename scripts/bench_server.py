"""Benchmark of the reference repository server alone; prints JSON.

Starts `eotdlfs serve` on a temp root (a separate process, as deployed), fills it, and
measures with clients that cost little themselves:
- `range_4k_rps`, `range_128k_rps`, `range_1m_rps`: Range GETs per second over one
  keep-alive connection (one curl process fetching many URLs);
- `full_MBps`: one curl of a whole file (`--big-mib`, default 256);
- `batch_495_files_s`: one zip batch of 495 files of 4 KiB (route 6, fsyncs included);
- `carry_10k_s`: carrying 10,000 files into a new version (route 7, 21 requests);
- `list_10k_s`: the file listing of a 10,000-file version (route 5);
- `multipart_MBps`: a `--big-mib` file through routes 10-12 (4 parts in flight) and
  `complete_MBps`: the completion alone (concatenate, SHA-1, fsync).
With `--distributed`, instead: the same server on PostgreSQL + S3 (both started here on
127.0.0.1: Debian's PostgreSQL, moto's S3 server), as one replica, two replicas behind nginx,
and one replica with `--redirect-downloads`, measuring for each
- `ingest_MBps`: a `--big-mib` file through routes 10-12 (4 parts in flight) and
- `range_128k_rps`: Range GETs of 128 KiB (of a 4 MiB file) per second over one keep-alive
  connection, through the replica (or balancer); with redirects, to the presigned URL the client reuses, plus
  `redirect_rps`: the 307 answers per second the replica gives.
Usage: python scripts/bench_server.py [--big-mib 256] [--distributed]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import requests

from eotdlfs.server.auth import issue_token

PART = 10 * 1024 * 1024
START_TIMEOUT_S = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, extra: list[str] = ()) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "eotdlfs", "serve", "--root", str(root), "--port", str(port),
                             *extra],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "eotdlfs/capabilities", timeout=1).status_code == 200:
                return proc, url
        except requests.RequestException:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("eotdlfs serve did not start")


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def ok(response: requests.Response) -> requests.Response:
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.method} {response.url}: {response.status_code} {response.text}")
    return response


def upload(s: requests.Session, url: str, rid: str, big: bytes) -> tuple[float, float]:
    """Seconds to send BIG's parts through routes 10-11 (4 in flight), and to complete it (route 12)."""
    upload_id = ok(s.post(url + f"datasets/{rid}/uploadId", json={"filname": "big.bin",
                                                                  "checksum": hashlib.sha1(big).hexdigest()}))
    upload_id = upload_id.json()["upload_id"]
    parts = [(i // PART + 1, big[i:i + PART]) for i in range(0, len(big), PART)]

    def send(part: tuple[int, bytes]) -> None:
        ok(s.post(url + f"datasets/chunk/{upload_id}", files={"file": ("part", part[1])},
                  data={"part_number": part[0], "checksum": hashlib.md5(part[1]).hexdigest()}))

    def send_all() -> None:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(send, parts))

    chunks_s = timed(send_all)
    return chunks_s, timed(lambda: ok(s.post(url + f"datasets/complete/{upload_id}?version=1")))


def run(url: str, token: str, big_mib: int) -> dict:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    rid = ok(s.post(url + "datasets", json={"name": "bench-server", "authors": ["bench"],
                                            "source": "http://example.com", "license": "MIT"})).json()["dataset_id"]
    ok(s.post(url + f"datasets/version/{rid}"))
    out: dict = {}

    big = os.urandom(big_mib * 1024 * 1024)
    chunks_s, complete_s = upload(s, url, rid, big)
    out["multipart_MBps"] = round(len(big) / (chunks_s + complete_s) / 1e6, 1)
    out["complete_MBps"] = round(len(big) / complete_s / 1e6, 1)

    file_url = url + f"datasets/{rid}/download/big.bin"
    for label, size, n in (("range_4k_rps", 4096, 1000), ("range_128k_rps", 128 * 1024, 500),
                           ("range_1m_rps", 1024 * 1024, 200)):
        args = ["curl", "-s", "-r", f"0-{size - 1}"] + [file_url] * n + ["-o", "/dev/null"] * n
        out[label] = round(n / timed(lambda: subprocess.run(args, check=True)))
    full = [timed(lambda: subprocess.run(["curl", "-s", "-o", "/dev/null", file_url], check=True)) for _ in range(3)]
    out["full_MBps"] = round(len(big) / sorted(full)[1] / 1e6)

    files = {f"d{i % 100}/f{i:05d}.bin": os.urandom(4096) for i in range(10_000)}
    names = list(files)
    batches = [names[k:k + 495] for k in range(0, len(names), 495)]

    def batch(chunk: list[str]) -> None:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for name in chunk:
                zf.writestr(name, files[name])
        ok(s.post(url + f"datasets/{rid}/batch?version=1", files={"batch": ("b.zip", buf.getvalue())},
                  data={"checksums": [hashlib.sha1(files[n]).hexdigest() for n in chunk]}))

    out["batch_495_files_s"] = round(timed(lambda: batch(batches[0])), 3)
    for chunk in batches[1:]:
        batch(chunk)
    version = ok(s.post(url + f"datasets/version/{rid}?draft=true")).json()["version"]

    def carry_all() -> None:
        for chunk in batches:
            ok(s.post(url + f"datasets/{rid}/files?version={version}",
                      data={"filenames": chunk, "checksums": [hashlib.sha1(files[n]).hexdigest() for n in chunk]}))

    out["carry_10k_s"] = round(timed(carry_all), 3)
    out["list_10k_s"] = round(timed(lambda: ok(s.get(url + f"datasets/{rid}/files?version={version}")).json()), 3)
    return out


def curl_rps(urls: list[str], size: int) -> int:
    """Range GETs of SIZE bytes per second, one curl process over one keep-alive connection."""
    args = ["curl", "-s", "-f", "-r", f"0-{size - 1}"] + urls + ["-o", "/dev/null"] * len(urls)
    return round(len(urls) / timed(lambda: subprocess.run(args, check=True)))


def run_distributed(big_mib: int) -> dict:
    """One replica, two behind nginx, one redirecting: each on its own database and bucket."""
    repo = Path(__file__).resolve().parent.parent
    sys.path[:0] = [str(repo), str(repo / "tests" / "server")]  # the test suite's engines
    from engines import Balancer, MotoS3, Postgres, postgres_bindir

    bindir = postgres_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL is not installed (bash scripts/install.sh --test)")
    pg, s3 = Postgres(bindir), MotoS3()
    procs: list[subprocess.Popen] = []
    out: dict = {"big_file_bytes": big_mib * 1024 * 1024, "object_store": "moto_server (Python, one process)"}
    big = os.urandom(big_mib * 1024 * 1024)
    try:
        pg.start()
        s3.start()
        os.environ.update(s3.env)
        for label, replicas, redirect in (("one_replica", 1, False), ("two_replicas", 2, False),
                                          ("one_replica_redirect", 1, True)):
            db, blobs, work = pg.database(), s3.bucket(), Path(tempfile.mkdtemp(prefix="eotdlfs-bench-server-"))
            extra = ["--db", db, "--blobs", blobs] + (["--redirect-downloads"] if redirect else [])
            urls = []
            for i in range(replicas):
                proc, replica_url = start_server(work / f"r{i}", extra)
                procs.append(proc)
                urls.append(replica_url)
            balancer = Balancer([int(u.rsplit(":", 1)[1].strip("/")) for u in urls]) if replicas > 1 else None
            try:
                url = balancer.url if balancer else urls[0]
                s = requests.Session()
                s.headers["Authorization"] = f"Bearer {issue_token(None, 'bench', db_url=db)}"
                rid = ok(s.post(url + "datasets", json={"name": "bench", "authors": ["bench"],
                                                        "source": "http://example.com", "license": "MIT"}))
                rid = rid.json()["dataset_id"]
                ok(s.post(url + f"datasets/version/{rid}"))
                result = {"ingest_MBps": round(len(big) / sum(upload(s, url, rid, big)) / 1e6, 1)}
                # ranges of a 4 MiB file: moto reads a whole object for each range, so a big one would
                # measure moto alone
                small = os.urandom(4 * 1024 * 1024)
                ok(s.post(url + f"datasets/{rid}?version=1", files={"file": ("ranges.bin", small)},
                          data={"checksum": hashlib.sha1(small).hexdigest()}))
                file_url = url + f"datasets/{rid}/download/ranges.bin"
                if redirect:
                    location = s.get(file_url, allow_redirects=False).headers["location"]
                    result["range_128k_rps"] = curl_rps([location] * 300, 128 * 1024)
                    args = ["curl", "-s", "-o", "/dev/null"] + [file_url] * 1000
                    result["redirect_rps"] = round(1000 / timed(lambda: subprocess.run(args, check=True)))
                else:
                    result["range_128k_rps"] = curl_rps([file_url] * 300, 128 * 1024)
                out[label] = result
            finally:
                if balancer:
                    balancer.stop()
                for proc in procs:
                    proc.terminate()
                    proc.wait(10)
                procs.clear()
                shutil.rmtree(work, ignore_errors=True)
    finally:
        for proc in procs:
            proc.kill()
        s3.stop()
        pg.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-mib", type=int, default=256)
    parser.add_argument("--distributed", action="store_true", help="PostgreSQL + S3: one replica vs two vs redirects")
    args = parser.parse_args()
    if args.distributed:
        print(json.dumps(run_distributed(args.big_mib), indent=2))
        return
    with served() as (_, url, work):
        result = {"big_file_bytes": args.big_mib * 1024 * 1024,
                  **run(url, issue_token(work / "root", "bench"), args.big_mib)}
        print(json.dumps(result, indent=2))


@contextmanager
def served() -> Iterator[tuple[subprocess.Popen, str, Path]]:
    """(server process, its URL, a temp folder whose root/ it serves); all gone after the block."""
    work = Path(tempfile.mkdtemp(prefix="eotdlfs-bench-server-"))
    proc = None
    try:
        proc, url = start_server(work / "root")
        yield proc, url, work
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
