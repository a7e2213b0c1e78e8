"""The user's eotdlfs cache dir, shared by the mount (block cache, listings, staged files, its log)
and `eotdlfs ingest` (SHA-1s, drafts, locks, STAC documents): where it is, and that it is private.

One place for both, so `$EOTDLFS_CACHE_DIR` moves both, and an ingest run before any mount
closes a cache dir open to other users as a mount does.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from pathlib import Path

import platformdirs

log = logging.getLogger(__name__)

MOUNTINFO = "/proc/self/mountinfo"
# File systems that other machines may share (cluster homes, network drives, object stores),
# by the type /proc/self/mountinfo gives them; FUSE ones by their subtype (fuse.sshfs).
SHARED_FILESYSTEMS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "ceph", "glusterfs", "beegfs",
                      "9p", "afs", "ocfs2", "gfs2", "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone",
                      "fuse.glusterfs", "fuse.ceph-fuse", "fuse.juicefs", "fuse.goofys", "fuse.mount-s3",
                      "fuse.blobfuse2", "fuse.cvmfs2"}


def user_cache_dir() -> Path:
    """`$EOTDLFS_CACHE_DIR`, else the platform's user cache dir for eotdlfs."""
    override = os.environ.get("EOTDLFS_CACHE_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir("eotdlfs"))


def make_private(cache_dir: Path) -> None:
    """Create CACHE_DIR 0700 if missing. Staged files there are the only copy of unpublished
    bytes, and ingest's files name the files ingested, so when it is open to group or others (made
    by an older eotdlfs or by hand) it is closed, with everything below it. A private cache dir is
    not walked: what is in it was made private and nobody else can reach it anyway."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:  # a read-only home on a cluster node: say what to do, not only ENOENT
        raise type(exc)(exc.errno, f"cannot make the cache dir ({exc.strerror}); give a writable one with "
                                   "EOTDLFS_CACHE_DIR (or a mount's --cache-dir)", str(cache_dir)) from exc
    if not stat.S_IMODE(cache_dir.stat().st_mode) & 0o077:
        return
    log.warning("%s was open to other users; closing it and everything in it", cache_dir)
    for folder, _, files in os.walk(cache_dir):  # each folder is visited as FOLDER once
        for path in [folder, *(os.path.join(folder, name) for name in files)]:
            st = os.lstat(path)
            if st.st_mode & 0o077 and not stat.S_ISLNK(st.st_mode):
                os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o077)


def free_bytes(path: Path) -> int | None:
    """The room left on PATH's disk, or None where that cannot be read (a failed disk's answer
    to a full-disk question is "don't know")."""
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def filesystem_type(path: Path, mountinfo: str = MOUNTINFO) -> str | None:
    """The type of the file system PATH (or its nearest existing parent) is on, as
    /proc/self/mountinfo names it (ext4, nfs4, fuse.sshfs); None where that cannot be read."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        dev = os.stat(path).st_dev
        with open(mountinfo) as lines:
            # ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER_OPTIONS
            found = [line.split(" - ", 1)[1].split()[0] for line in lines
                     if line.split()[2] == f"{os.major(dev)}:{os.minor(dev)}" and " - " in line]
    except (OSError, IndexError):
        return None
    return found[-1] if found else None


def warn_if_shared(cache_dir: Path) -> None:
    """Log `shared_cache_warning` of CACHE_DIR, if any (a mount's log, an `eotdl://` script's)."""
    shared = shared_cache_warning(cache_dir)
    if shared:
        log.warning("%s", shared)


def shared_cache_warning(cache_dir: Path, mountinfo: str = MOUNTINFO) -> str | None:
    """Words for a cache dir on a file system other machines may share (a cluster's home), or None.
    SQLite's write-ahead log in it, the block cache's and staging's, must not be used from two
    machines at once (SQLite's own rule); a block cache so used is found damaged and started again."""
    kind = filesystem_type(cache_dir, mountinfo)
    if kind not in SHARED_FILESYSTEMS:
        return None
    return (f"the cache dir {cache_dir} is on {kind}, which other machines may share; the cache must not be used "
            "from two machines at once: on a cluster, give each node a local one (--cache-dir, or "
            "EOTDLFS_CACHE_DIR, e.g. on node-local scratch or /tmp)")
