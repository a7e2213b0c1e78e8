"""SHA-1 of a file on disk, the checksum EOTDL names file versions by (client, staging and fsck)."""

from __future__ import annotations

import hashlib
from pathlib import Path

HASH_BLOCK = 1 << 20


def sha1_file(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()
