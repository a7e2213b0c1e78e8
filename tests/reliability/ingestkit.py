"""What the crash and load tests ingest and how they check it: a folder, the `eotdlfs ingest` command, a verifier."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

MiB = 1024 * 1024


def make_folder(folder: Path, name: str, small: int = 20, large_bytes: int = 0, seed: int = 0) -> dict[str, bytes]:
    """FOLDER with metadata.yml naming NAME, SMALL small files and (if LARGE_BYTES) one multipart-sized file."""
    rng = random.Random(seed)
    files = {"metadata.yml": f"name: {name}\nauthors: [Reliability]\nlicense: MIT\nsource: http://example.com\n".encode()}
    for i in range(small):
        files[f"tiles/t{i:03d}.bin"] = rng.randbytes(rng.randint(1, 64 * 1024))
    if large_bytes:
        files["big/scene.tif"] = rng.randbytes(large_bytes)
    for path, data in files.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return files


def ingest_command(folder: Path, api_url: str, token: str) -> list[str]:
    return [sys.executable, "-m", "eotdlfs", "ingest", str(folder), "--api-url", api_url, "--token", token]


def ingest_env(cache_home: Path) -> dict[str, str]:
    """The environment of an ingest subprocess: its own hash cache, a short read timeout."""
    return {**os.environ, "XDG_CACHE_HOME": str(cache_home), "EOTDLFS_CACHE_DIR": str(cache_home / "eotdlfs"),
            "EOTDLFS_TIMEOUT": "10"}


def start_ingest(folder: Path, api_url: str, token: str, cache_home: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(ingest_command(folder, api_url, token), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out, env=ingest_env(cache_home))


def run_ingest(folder: Path, api_url: str, token: str, cache_home: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(ingest_command(folder, api_url, token), capture_output=True, text=True,
                          timeout=timeout, env=ingest_env(cache_home), stdin=subprocess.DEVNULL)


def record(url: str, kind: str, name: str) -> dict[str, Any]:
    r = requests.get(f"{url}{kind}", params={"name": name}, timeout=30)
    r.raise_for_status()
    return r.json()


def bytes_lost(url: str, kind: str, record_id: str, version: int, files: dict[str, bytes]) -> int:
    """How many bytes of FILES version VERSION does not give back exactly (0 = every byte checks out)."""
    listing = requests.get(f"{url}{kind}/{record_id}/files", params={"version": version}, timeout=30).json()
    by_path = {f["filename"]: f for f in listing}
    lost = sum(len(data) for path, data in files.items() if path not in by_path)
    lost += sum(f["size"] for path, f in by_path.items() if path not in files)  # extra files count as wrong bytes
    for path, data in files.items():
        entry = by_path.get(path)
        if entry is None:
            continue
        got = requests.get(f"{url}{kind}/{record_id}/download/{path}", params={"version": entry["version"]},
                           timeout=60).content
        if hashlib.sha1(got).hexdigest() != hashlib.sha1(data).hexdigest() or entry["checksum"] != hashlib.sha1(data).hexdigest():
            lost += len(data)
    return lost
