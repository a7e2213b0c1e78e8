"""Benchmark of the writable staging area of a mount; prints JSON.

- `copy_in_MBps`: `cp` of one 1 GiB local file into `MNT/staging/datasets/NEW/` (file
  closed, bytes on the staging disk), in MB/s; target >= 200.
- `flush_10k_1changed_s`: `eotdlfs flush` (the CLI, start-up included) of a staged dataset
  of 10,000 small files with one changed, until the new version is published; target < 3.
- `carries`: bytes the flush sent and its seconds after `mv` of a published 64 MiB file,
  `mv` of a folder of 20 files (76 MB), `cp` of a published file inside the record, and
  for a new sparse file (3 GiB hole + 7 bytes); target: ~0 bytes for the first three, and
  the sparse file's data (or its compressed parts) for the last.

It starts its own `eotdlfs serve` and `eotdlfs mount --foreground` on temp folders
(127.0.0.1 only) and removes both when done, also on failure.
Usage: python scripts/bench_staging.py [--files 10000] [--copy-mib 1024] [--sparse-gib 3]
       [--only copy,flush,carries]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from eotdlfs.client.api import ApiClient
from eotdlfs.client.ingest import ingest_folder
from eotdlfs.client.settings import Settings
from eotdlfs.fs.mount import fusermount, is_mounted, stop_process
from eotdlfs.fs.staging.control import FLUSH_XATTR
from eotdlfs.server.auth import issue_token

MB = 1_000_000
USER = "bench-user"
START_TIMEOUT_S = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(ready, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {START_TIMEOUT_S} s")
        time.sleep(0.05)


def server_up(url: str) -> bool:
    try:
        return requests.get(url + "eotdlfs/capabilities", timeout=1).ok
    except requests.RequestException:
        return False


def write_metadata(folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.yml").write_text(f"name: {name}\nauthors: [bench]\nlicense: MIT\nsource: http://example.org\n")


def small_dataset(folder: Path, name: str, files: int) -> Path:
    write_metadata(folder, name)
    for i in range(files - 1):
        sub = folder / f"d{i % 100:02d}"
        sub.mkdir(exist_ok=True)
        (sub / f"f{i:05d}.txt").write_text(f"small file {i}\n")
    return folder


def bench_copy_in(work: Path, mnt: Path, mib: int) -> dict:
    source = work / "big.bin"
    block = os.urandom(64 << 20)
    with open(source, "wb") as f:
        for i in range(max(1, mib // 64)):
            f.write(block[:-8] + i.to_bytes(8, "big"))
    size = source.stat().st_size
    subprocess.run(["cat", str(source)], stdout=subprocess.DEVNULL, check=True)  # source in the page cache
    # The ceiling: the same copy onto the disk that holds the staged files, without FUSE.
    start = time.perf_counter()
    subprocess.run(["cp", str(source), str(work / "cache" / "ceiling.bin")], check=True, timeout=600)
    ceiling_s = time.perf_counter() - start
    (work / "cache" / "ceiling.bin").unlink()
    target = mnt / "staging" / "datasets" / "bench-copy"
    target.mkdir()
    start = time.perf_counter()
    subprocess.run(["cp", str(source), str(target / "big.bin")], check=True, timeout=600)
    seconds = time.perf_counter() - start
    assert (target / "big.bin").stat().st_size == size
    source.unlink()
    return {"copy_in_bytes": size, "copy_in_s": round(seconds, 3), "copy_in_MBps": round(size / seconds / MB, 1),
            "local_cp_MBps": round(size / ceiling_s / MB, 1)}


def bench_flush(mnt: Path, env: dict[str, str], name: str, files: int) -> dict:
    target = mnt / "staging" / "datasets" / name
    (target / "d07" / "f00007.txt").write_text("changed in staging\n")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "eotdlfs", "flush", str(target)], env=env,
                          capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"flush failed: {done.stderr.strip()}")
    state = json.loads(os.getxattr(target, FLUSH_XATTR))
    phases = {k: state["result"][k] for k in ("freeze_s", "ingest_s", "restage_s")}
    return {"flush_files": files, "flush_10k_1changed_s": round(seconds, 3), "flush_phases_in_mount": phases,
            "flush_message": done.stdout.strip()}


def flush_cli(target: Path, env: dict[str, str]) -> dict:
    """`eotdlfs flush TARGET`: its seconds (start-up included) and the bytes the ingest sent."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "eotdlfs", "flush", str(target), "--timeout", "600"], env=env,
                          capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"flush failed: {done.stderr.strip()}")
    state = json.loads(os.getxattr(target, FLUSH_XATTR))
    return {"bytes_sent": state["result"].get("bytes_sent", 0), "s": round(seconds, 3)}


def bench_carries(work: Path, mnt: Path, api: ApiClient, env: dict[str, str], sparse_gib: int) -> dict:
    """Bytes sent and seconds of flushes whose files the repository already holds, and of a sparse file."""
    name = "bench-moves"
    folder = work / name
    write_metadata(folder, name)
    (folder / "big.bin").write_bytes(os.urandom(64 << 20))
    (folder / "tiles").mkdir()
    for i in range(20):
        (folder / "tiles" / f"tile{i:02d}.tif").write_bytes(os.urandom(3_800_000))
    (folder / "known.bin").write_bytes(os.urandom(4 << 20))
    ingest_folder(api, "datasets", folder)
    shutil.rmtree(folder)
    target = mnt / "staging" / "datasets" / name
    result = {}
    os.rename(target / "big.bin", target / "big-moved.bin")
    result["mv_64MiB"] = flush_cli(target, env)
    os.rename(target / "tiles", target / "tiles-moved")
    result["mv_folder_20_files_76MB"] = flush_cli(target, env)
    subprocess.run(["cp", str(target / "known.bin"), str(target / "known-copy.bin")], check=True, timeout=600)
    result["cp_known_4MiB"] = flush_cli(target, env)
    with open(target / "sparse.bin", "wb") as sparse:
        sparse.truncate(sparse_gib << 30)
        sparse.seek(sparse_gib << 30)
        sparse.write(b"7 bytes")
    result[f"sparse_{sparse_gib}GiB_plus_7_bytes"] = flush_cli(target, env)
    return {"carries": result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--copy-mib", type=int, default=1024)
    parser.add_argument("--sparse-gib", type=int, default=3)
    parser.add_argument("--only", default="copy,flush,carries", help="comma-separated: copy, flush, carries")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="eotdlfs-bench-staging-"))
    root, mnt, cache = work / "root", work / "mnt", work / "cache"
    mnt.mkdir()
    env = {**os.environ, "EOTDLFS_CACHE_DIR": str(work / "hash-cache")}
    url = f"http://127.0.0.1:{free_port()}/"
    procs: list[subprocess.Popen] = []
    log = open(work / "processes.log", "wb")
    try:
        procs.append(subprocess.Popen([sys.executable, "-m", "eotdlfs", "serve", "--root", str(root), "--port",
                                       url.rsplit(":", 1)[1].strip("/")], env=env, stdin=subprocess.DEVNULL,
                                      stdout=log, stderr=log))
        wait_until(lambda: server_up(url), "eotdlfs serve")
        token = issue_token(root, USER)
        env["EOTDL_TOKEN"] = token
        api = ApiClient(Settings(api_url=url, token=token, api_key=None))
        os.environ["EOTDLFS_CACHE_DIR"] = env["EOTDLFS_CACHE_DIR"]
        only = set(args.only.split(","))
        if "flush" in only:
            ingest_folder(api, "datasets", small_dataset(work / "small", "bench-small", args.files))
        procs.append(subprocess.Popen([sys.executable, "-m", "eotdlfs", "mount", str(mnt), "--foreground",
                                       "--api-url", url, "--cache-dir", str(cache)], env=env,
                                      stdin=subprocess.DEVNULL, stdout=log, stderr=log))
        wait_until(lambda: is_mounted(mnt), "eotdlfs mount")
        result = {**(bench_copy_in(work, mnt, args.copy_mib) if "copy" in only else {}),
                  **(bench_flush(mnt, env, "bench-small", args.files) if "flush" in only else {}),
                  **(bench_carries(work, mnt, api, env, args.sparse_gib) if "carries" in only else {})}
        result["targets"] = {"copy_in_MBps": ">= 200", "flush_10k_1changed_s": "< 3",
                             "carries": "~0 bytes sent for mv and cp; the sparse file's data, compressed"}
        print(json.dumps(result, indent=2))
    finally:
        if is_mounted(mnt):
            fusermount(mnt)
        for proc in reversed(procs):
            stop_process(proc.pid)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
