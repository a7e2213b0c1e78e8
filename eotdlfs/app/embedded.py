"""The embedded local repository: what eotdlfs talks to when no API URL is configured.

`local_repository()` starts the reference server in this process on
`user_data_dir("eotdlfs")/repository`, issues a token for the local user, and on first use
seeds the sample dataset `sample-scenes` (two versions, from `eotdlfs/server/sample/`) with
the ingestion engine, so a first `eotdlfs mount` shows something real at once.
"""

from __future__ import annotations

import getpass
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import platformdirs

from eotdlfs.client.api import ApiClient
from eotdlfs.client.ingest.engine import ingest_folder
from eotdlfs.client.settings import Settings

log = logging.getLogger(__name__)

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "server" / "sample"
SEEDED_MARKER = "sample-seeded"


@dataclass
class LocalRepository:
    url: str
    token: str
    stop: Callable[[], None]
    root: Path


def default_root() -> Path:
    return Path(platformdirs.user_data_dir("eotdlfs")) / "repository"


def local_repository(root: Path | None = None, seed: bool = True) -> LocalRepository:
    """Serve ROOT (default: the user data dir) on 127.0.0.1 in a daemon thread."""
    # Imported here: the server (FastAPI, SQLAlchemy, drivers) is 60 MB of a mount's memory
    # that only a mount without a repository URL needs.
    from eotdlfs.server.auth import issue_token
    from eotdlfs.server.run import start_in_thread

    root = Path(root or default_root())
    root.mkdir(parents=True, exist_ok=True)
    # The user's own data, as private as the rest of their home: its folder closed to other users
    # (the umask left it 0755), and every request to its port, which any local user can open, checked.
    root.chmod(0o700)
    server = start_in_thread(root, "127.0.0.1", 0, private=True)
    local = LocalRepository(server.url, issue_token(root, getpass.getuser()), server.stop, root)
    if seed and not (root / SEEDED_MARKER).exists():
        try:
            seed_sample(local)
        except Exception:
            server.stop()
            raise
    return local


def sample_versions() -> list[Path]:
    """The sample's version folders in order; each is an overlay on the ones before."""
    return sorted(p for p in SAMPLE_DIR.iterdir() if p.is_dir() and p.name.startswith("v"))


def seed_sample(local: LocalRepository) -> None:
    """Ingest every sample version (as the local user); mark the repository as seeded."""
    api = ApiClient(Settings(local.url, local.token, None))
    try:
        with tempfile.TemporaryDirectory(prefix="eotdlfs-sample-") as scratch:
            folder = Path(scratch) / "sample"
            for version in sample_versions():
                shutil.copytree(version, folder, dirs_exist_ok=True)
                result = ingest_folder(api, "datasets", folder)
                log.info("seeded sample version %s", result.version)
    finally:
        api.close()
    (local.root / SEEDED_MARKER).write_text("sample-scenes\n")


def settings_or_local(settings: Settings) -> tuple[Settings, LocalRepository | None]:
    """SETTINGS as they are when an API URL is configured; else the embedded local repository's
    URL and token, with that repository (the caller stops it)."""
    if settings.api_url is not None:
        return settings, None
    local = local_repository()
    return Settings(api_url=local.url, token=local.token, api_key=None, timeout=settings.timeout), local
