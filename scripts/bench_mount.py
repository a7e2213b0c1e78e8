#!/usr/bin/env python3
"""Benchmark of the read-only mount on its own (issue 5); prints one JSON object.

Sets up in a temp folder on 127.0.0.1: `eotdlfs serve` (a separate process) with a dataset
of one big file (1 GiB; `--quick`: 128 MiB) and 10,000 files of 4 KiB (`--quick`: 1,000)
ingested by `eotdlfs ingest`, then measures, in the same run:

- `curl_MBps`: curl of the big file from the same server (the ceiling);
- `fuse_ceiling_MBps`: the same 1 MiB reads of a file of the same size on a fresh mount of the
  null filesystem (benchlib.nullfs: our FUSE shim and mount options, bytes copied from memory,
  no network, cache or hashing), the most any fusepy mount gets here; `fuse_ceiling_cpu_s_per_GiB`
  the CPU seconds its process spends per GiB read;
- `sha1_cpu_s_per_GiB`: CPU seconds of hashlib.sha1 over 1 GiB in the bench process (the mount
  checks every file's SHA-1);
- `block_check_cpu_s_per_GiB`: CPU seconds of the block cache's read-back check (CRC32C) over
  1 GiB in 1 MiB blocks, in the bench process;
- `ls_lR_10k_s`: `ls -lR` of the small files on a fresh mount (listing fetch included);
- `first_64k_ms`: open + first 64 KiB of the big file (not cached; its folder already listed);
- `cold_seq_MBps`: the big file read start to end with 1 MiB reads, empty block cache;
  `mount_cpu_s_per_GiB` and `server_cpu_s_per_GiB`: CPU seconds (user + system, /proc/PID/stat)
  the mount process and the server process spend per GiB during that read (and 0.5 s after it);
- `warm_seq_MBps`: the same read again on the same mount (kernel page cache);
- `disk_cache_seq_MBps`, `disk_cache_mount_cpu_s_per_GiB`: the same read once more after dropping
  the kernel's pages of the file: every block is read back from the block cache's disk and
  checked, nothing fetched (`disk_cache_fetched_ratio` says so);
- `fuse_binding`, `largest_read_request`: the binding the mount loaded (`EOTDLFS_FUSE=2|3` picks
  one) and the largest read request its callback got during those reads (status.json);
- `rss_peak_MB`: peak RSS (VmHWM) of a second mount process, with a cache limit of 256 MiB,
  while it streams the big file twice cold (the pages are dropped with
  posix_fadvise(DONTNEED) between the reads): 2 GiB in the full run.
Every mount and server is stopped by PID and fusermount on the way out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import eotdlfs_side, measure, nullfs  # noqa: E402
from benchlib.dataset import BIG_FILE, SMALL_DIR, DatasetSpec, generate  # noqa: E402
from benchlib.processes import ForegroundMount, cpu_seconds, peak_rss_mb  # noqa: E402

NAME = "bench-mount"


def drop_pages(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cpu_now(pid: int) -> float:
    used = cpu_seconds(pid)
    if used is None:
        raise RuntimeError(f"process {pid} is gone")
    return used


def cpu_s_per_GiB(before: float, pid: int, nbytes: int) -> float:
    """CPU seconds PID used since it had used BEFORE, per GiB of NBYTES read."""
    return round((cpu_now(pid) - before) / (nbytes / measure.GiB), 2)


def fuse_ceiling(work: Path, size: int) -> tuple[float, float]:
    """MB/s and CPU-s per GiB of a cold read of the null filesystem's SIZE-byte file, on a fresh mount."""
    null = nullfs.null_mount(work / "mnt-null", size, work / "nullfs.log")
    try:
        before = cpu_now(null.pid)
        speed = measure.seq_read_MBps(null.mnt / nullfs.FILE_NAME, size)
        return round(speed, 1), cpu_s_per_GiB(before, null.pid, size)
    finally:
        null.stop()


def mount(work: Path, label: str, server, env: dict, *extra: str) -> ForegroundMount:
    argv = [*eotdlfs_side.eotdlfs_command(), "mount", str(work / f"mnt-{label}"), "--api-url", server.url,
            "--cache-dir", str(work / f"cache-{label}"), "--foreground", *extra]
    return ForegroundMount(argv, work / f"mnt-{label}", work / f"cache-{label}", work / f"mount-{label}.log", env)


def run(work: Path, quick: bool) -> dict:
    spec = DatasetSpec(big_bytes=(128 if quick else 1024) << 20, small_count=1000 if quick else 10_000,
                       small_bytes=4096, geotiff_bytes=0)
    dataset = generate(work / "data", NAME, spec)
    home = work / "home"
    server = eotdlfs_side.EotdlfsServer(work / "repo", eotdlfs_side.isolated_env(home), work / "server.log")
    mounts: list[ForegroundMount] = []
    try:
        env = eotdlfs_side.isolated_env(home, server.url, eotdlfs_side.issue_token(work / "repo"))
        ingest_s = eotdlfs_side.run_command(["ingest", str(dataset.root)], env, work / "ingest.log", 3600)
        result = {"big_file_bytes": spec.big_bytes, "small_files": spec.small_count, "ingest_s": round(ingest_s, 2),
                  "curl_MBps": round(measure.curl_MBps(server.download_url(NAME, BIG_FILE)), 1)}
        result["fuse_ceiling_MBps"], result["fuse_ceiling_cpu_s_per_GiB"] = fuse_ceiling(work, spec.big_bytes)
        result["sha1_cpu_s_per_GiB"] = round(measure.sha1_cpu_s_per_GiB(), 2)
        result["block_check_cpu_s_per_GiB"] = round(measure.block_check_cpu_s_per_GiB(), 3)

        mounts.append(mount(work, "a", server, env))
        version = mounts[-1].mnt / "datasets" / NAME / "v1"
        result["ls_lR_10k_s"] = round(measure.ls_lR_s(version / SMALL_DIR, spec.small_count), 3)
        result["ls_lR_again_s"] = round(measure.ls_lR_s(version / SMALL_DIR, spec.small_count), 3)
        result["first_64k_ms"] = round(measure.first_byte_ms(version / BIG_FILE), 1)
        sent = server.bytes_sent()
        mount_cpu, server_cpu = cpu_now(mounts[-1].pid), cpu_now(server.pid)
        result["cold_seq_MBps"] = round(measure.seq_read_MBps(version / BIG_FILE, spec.big_bytes), 1)
        time.sleep(0.5)  # the last sends, and the last blocks written to the cache, belong to the read too
        result["mount_cpu_s_per_GiB"] = cpu_s_per_GiB(mount_cpu, mounts[-1].pid, spec.big_bytes)
        result["server_cpu_s_per_GiB"] = cpu_s_per_GiB(server_cpu, server.pid, spec.big_bytes)
        result["cold_fetched_ratio"] = round((server.bytes_sent() - sent) / spec.big_bytes, 3)
        result["warm_seq_MBps"] = round(measure.seq_read_MBps(version / BIG_FILE, spec.big_bytes), 1)
        drop_pages(version / BIG_FILE)
        sent, mount_cpu = server.bytes_sent(), cpu_now(mounts[-1].pid)
        result["disk_cache_seq_MBps"] = round(measure.seq_read_MBps(version / BIG_FILE, spec.big_bytes), 1)
        result["disk_cache_mount_cpu_s_per_GiB"] = cpu_s_per_GiB(mount_cpu, mounts[-1].pid, spec.big_bytes)
        result["disk_cache_fetched_ratio"] = round((server.bytes_sent() - sent) / spec.big_bytes, 3)
        result["rss_after_cold_warm_MB"] = round(peak_rss_mb(mounts[-1].pid) or 0, 1)
        fuse = json.loads((mounts[-1].mnt / ".eotdlfs" / "status.json").read_text())["fuse"]
        result["fuse_binding"] = f"{fuse['binding']}, libfuse {fuse['libfuse']}"
        result["largest_read_request"] = fuse["largest_read"]

        mounts.append(mount(work, "b", server, env, "--cache-size", "256M"))
        big = mounts[-1].mnt / "datasets" / NAME / "v1" / BIG_FILE
        streamed = measure.seq_read_MBps(big, spec.big_bytes)
        drop_pages(big)
        streamed = (streamed + measure.seq_read_MBps(big, spec.big_bytes)) / 2
        result["rss_peak_MB"] = round(peak_rss_mb(mounts[-1].pid) or 0, 1)
        result["rss_streamed_bytes"] = 2 * spec.big_bytes
        result["small_cache_seq_MBps"] = round(streamed, 1)
        result["cold_vs_curl"] = round(result["cold_seq_MBps"] / result["curl_MBps"], 3)
        result["machine"] = f"{os.cpu_count()} cores, loopback, load {[round(x, 2) for x in os.getloadavg()]}"
        return result
    finally:
        for m in mounts:
            m.stop()
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128 MiB and 1,000 files, for development")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-mount-"))
    try:
        print(json.dumps(run(work, args.quick), indent=2))
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
