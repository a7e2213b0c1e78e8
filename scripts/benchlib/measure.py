"""The reads every peer is put through, each returning one number; all bounded in count and time."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import time
from pathlib import Path

MB = 1e6  # MB/s in this benchmark are 10^6 bytes per second, as curl reports them
GiB = 1 << 30
READ_BUFFER = 1 << 20


def curl_MBps(url: str, timeout_s: float = 300) -> float:
    """Download URL to /dev/null with curl; its own average speed."""
    out = subprocess.run(
        ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{speed_download}", url],
        capture_output=True, text=True, timeout=timeout_s, check=True,
    ).stdout
    return float(out) / MB


def seq_read_MBps(path: Path, expected_bytes: int) -> float:
    """Read PATH start to end with a 1 MiB buffer, as `dd bs=1M` would."""
    buf = bytearray(READ_BUFFER)
    view = memoryview(buf)
    total = 0
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            total += n
    elapsed = time.perf_counter() - start
    if total != expected_bytes:
        raise RuntimeError(f"read {total} bytes of {path}, expected {expected_bytes}")
    return total / elapsed / MB


def sha1_cpu_s_per_GiB(chunk_bytes: int = 8 << 20) -> float:
    """CPU seconds this thread spends on hashlib.sha1 over 1 GiB (what checking a GiB's checksum costs)."""
    chunk = os.urandom(chunk_bytes)
    digest = hashlib.sha1()
    start = time.thread_time()
    for _ in range(GiB // chunk_bytes):
        digest.update(chunk)
    return time.thread_time() - start


def block_check_cpu_s_per_GiB(block_bytes: int = 1 << 20) -> float:
    """CPU seconds this thread spends on the block cache's read-back check (CRC32C) over 1 GiB."""
    from eotdlfs.fs.block_cache import block_crc

    block = os.urandom(block_bytes)
    start = time.thread_time()
    for _ in range(GiB // block_bytes):
        block_crc(block)
    return time.thread_time() - start


def first_byte_ms(path: Path, nbytes: int = 64 << 10) -> float:
    """Open PATH and read its first NBYTES: what a user waits for before a file shows anything."""
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        data = f.read(nbytes)
    elapsed = time.perf_counter() - start
    if not data:
        raise RuntimeError(f"{path} read empty")
    return elapsed * 1000


def ls_lR_s(folder: Path, expected_files: int, timeout_s: float = 600) -> float:
    """`ls -lR FOLDER` (every file stat'ed); checks it saw every file."""
    start = time.perf_counter()
    out = subprocess.run(["ls", "-lR", str(folder)], capture_output=True, text=True, timeout=timeout_s, check=True).stdout
    elapsed = time.perf_counter() - start
    seen = sum(1 for line in out.splitlines() if line.startswith("-"))
    if seen != expected_files:
        raise RuntimeError(f"ls -lR {folder} listed {seen} files, expected {expected_files}")
    return elapsed


def cp_r_files_per_s(folders: list[Path], out: Path, expected_files: int, timeout_s: float = 600) -> float:
    """`cp -r FOLDERS... OUT` (OUT an empty folder): a walker over small files; checks every file came."""
    start = time.perf_counter()
    subprocess.run(["cp", "-r", *map(str, folders), str(out)], timeout=timeout_s, check=True)
    elapsed = time.perf_counter() - start
    copied = sum(len(files) for _, _, files in os.walk(out))
    if copied != expected_files:
        raise RuntimeError(f"cp -r into {out} copied {copied} files, expected {expected_files}")
    return expected_files / elapsed


def rand4k_iops(path: Path, size: int, count: int, time_limit_s: float, seed: int = 42) -> float:
    """COUNT preads of 4 KiB at seeded 4 KiB-aligned offsets (stops early at TIME_LIMIT_S)."""
    rng = random.Random(seed)
    offsets = [rng.randrange(size // 4096) * 4096 for _ in range(count)]
    fd = os.open(path, os.O_RDONLY)
    try:
        done = 0
        start = time.perf_counter()
        deadline = start + time_limit_s
        for off in offsets:
            if len(os.pread(fd, 4096, off)) != 4096:
                raise RuntimeError(f"short read at {off} in {path}")
            done += 1
            if time.perf_counter() > deadline:
                break
        return done / (time.perf_counter() - start)
    finally:
        os.close(fd)


def geotiff_window_read(path: Path, size_px: int = 512) -> None:
    """A rasterio read of one SIZE_PX-square window from the middle of band 1."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as src:
        data = src.read(1, window=Window(src.width // 2, src.height // 2, size_px, size_px))
    if data.shape != (size_px, size_px):
        raise RuntimeError(f"window read of {path} gave shape {data.shape}")


_RANGE_READ = """
import sys, time, fsspec
url, offset, length = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fs, path = fsspec.core.url_to_fs(url)
fs.info(path)  # the version's listing: not part of the read
start = time.perf_counter()
got = len(fs.cat_file(path, offset, offset + length))
print(time.perf_counter() - start if got == length else f"read {got} bytes of {length}")
"""


def fsspec_range_read_s(url: str, offset: int, length: int, env: dict[str, str], timeout_s: float = 300) -> float:
    """`cat_file(URL, OFFSET, OFFSET + LENGTH)` through fsspec in a fresh process with ENV; its seconds."""
    out = subprocess.run([sys.executable, "-c", _RANGE_READ, url, str(offset), str(length)], env=env,
                         capture_output=True, text=True, timeout=timeout_s, check=True).stdout.strip()
    try:
        return float(out)
    except ValueError:
        raise RuntimeError(f"fsspec read of {url}: {out}") from None
