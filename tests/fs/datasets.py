"""Folders to ingest for the mount tests, ingested with the client's engine."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

from eotdlfs.client.api import ApiClient
from eotdlfs.client.ingest.engine import ingest_folder
from eotdlfs.client.repository import ApiRepository
from eotdlfs.client.settings import Settings


def write_metadata(folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.yml").write_text(
        f"name: {name}\nauthors: [Test Author]\nlicense: CC-BY-4.0\nsource: https://example.com/{name}\n")


def make_folder(folder: Path, name: str, seed: int = 1) -> Path:
    """A small dataset: nested folders, an empty file, a few MiB file, text files."""
    rng = random.Random(seed)
    write_metadata(folder, name)
    (folder / "images" / "2023").mkdir(parents=True, exist_ok=True)
    (folder / "images" / "2023" / "big.bin").write_bytes(rng.randbytes(3 * 1024 * 1024 + 17))
    for i in range(5):
        (folder / "images" / f"tile_{i}.bin").write_bytes(rng.randbytes(rng.randrange(1, 200_000)))
    (folder / "labels.csv").write_text("id,label\n" + "".join(f"{i},{rng.choice('ab')}\n" for i in range(100)))
    (folder / "empty.txt").write_bytes(b"")
    (folder / "name with spaces.txt").write_text("spaces\n")
    return folder


def ingest_one_file(server, folder: Path, name: str, filename: str, size: int, kind: str = "datasets") -> bytes:
    """Ingest FOLDER as record NAME holding one file of SIZE random bytes; those bytes."""
    write_metadata(folder, name)
    data = os.urandom(size)
    (folder / filename).write_bytes(data)
    ingest(server, folder, kind)
    return data


def ingest(server, folder: Path, kind: str = "datasets", user: str = "alice"):
    api = ApiClient(Settings(server.url, server.token(user), None))
    try:
        return ingest_folder(api, kind, folder)
    finally:
        api.close()


def file_times(server, name: str, version: int, kind: str = "datasets") -> dict[str, float]:
    """path -> when its file version was made (POSIX seconds), for every file of VERSION of NAME."""
    api = ApiClient(Settings(server.url, None, None))
    try:
        repo = ApiRepository(api)
        return {e.path: e.created_at for e in repo.files(repo.record(kind, name), version)}
    finally:
        api.close()


def tree_digest(folder: Path) -> dict[str, str]:
    """relative path -> SHA-1 of every regular file under FOLDER."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = Path(dirpath) / name
            out[str(path.relative_to(folder))] = hashlib.sha1(path.read_bytes()).hexdigest()
    return out
