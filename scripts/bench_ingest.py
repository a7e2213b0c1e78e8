"""Benchmark of the ingestion engine; prints JSON.

- `reingest_10k_1changed_s`: re-ingest of a folder of 10,000 small files with one changed
  (hash cache warm from the first ingest, as for a user who ingests again); target < 3 s.
- `upload_1gib_MBps`: ingest of one 1 GiB file (multipart, hashing included) in MB/s.

It starts its own repository server on a temp root (in this process by default, as the
embedded repository runs; `--server-process` runs `eotdlfs serve` apart, as a deployed
server does) and removes everything when done.
Usage: python scripts/bench_ingest.py [--files 10000] [--big-mib 1024] [--server-process]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from eotdlfs.client.api import ApiClient
from eotdlfs.client.ingest import ingest_folder
from eotdlfs.client.settings import Settings
from eotdlfs.server.auth import issue_token

MB = 1_000_000


class ServerProcess:
    """`eotdlfs serve` as a child process on a free port."""

    def __init__(self, root: Path):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/"
        self.proc = subprocess.Popen([sys.executable, "-m", "eotdlfs", "serve", "--root", str(root), "--port", str(port)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(self.url + "eotdlfs/capabilities", timeout=1)
                return
            except requests.RequestException:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("eotdlfs serve did not start within 30 s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def write_metadata(folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.yml").write_text(f"name: {name}\nauthors: [bench]\nlicense: MIT\nsource: http://example.org\n")


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def bench_small(api: ApiClient, work: Path, files: int) -> dict:
    folder = work / "small"
    write_metadata(folder, "bench-small")
    for i in range(files):
        sub = folder / f"d{i % 100:02d}"
        sub.mkdir(exist_ok=True)
        (sub / f"f{i:05d}.txt").write_text(f"small file {i}\n")
    first_s, first = timed(lambda: ingest_folder(api, "datasets", folder))
    changed = folder / "d07" / "f00007.txt"
    changed.write_text("changed\n")
    again_s, again = timed(lambda: ingest_folder(api, "datasets", folder))
    assert (again.uploaded, again.carried) == (1, files), again
    return {"files": files + 1, "ingest_10k_s": round(first_s, 3), "reingest_10k_1changed_s": round(again_s, 3),
            "reingest_uploaded": again.uploaded, "reingest_carried": again.carried}


def bench_big(api: ApiClient, work: Path, mib: int) -> dict:
    folder = work / "big"
    write_metadata(folder, "bench-big")
    block = os.urandom(64 * 1024 * 1024)
    with open(folder / "big.bin", "wb") as f:
        for i in range(mib // 64):
            f.write(block[:-8] + i.to_bytes(8, "big"))  # every part differs
    size = (folder / "big.bin").stat().st_size
    seconds, result = timed(lambda: ingest_folder(api, "datasets", folder))
    return {"big_file_bytes": size, "upload_1gib_s": round(seconds, 3),
            "upload_1gib_MBps": round(size / seconds / MB, 1), "big_bytes_sent": result.bytes_sent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--server-process", action="store_true", help="run the server as a separate process")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="eotdlfs-bench-ingest-"))
    os.environ["EOTDLFS_CACHE_DIR"] = str(work / "hash-cache")
    root = work / "root"
    server = None
    try:
        if args.server_process:
            server = ServerProcess(root)
        else:
            from eotdlfs.server.run import start_in_thread

            server = start_in_thread(root)
        api = ApiClient(Settings(api_url=server.url, token=issue_token(root, "bench"), api_key=None, timeout=300))
        report = {"server": "process" if args.server_process else "thread"}
        report.update(bench_small(api, work, args.files))
        report.update(bench_big(api, work, args.big_mib))
        report["targets"] = {"reingest_10k_1changed_s": 3.0}
        print(json.dumps(report, indent=2))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
