"""What each POSIX operation does on the read-only and staging trees, errno by errno (docs/RELIABILITY.md's table).

One real mount of a one-version dataset; every operation is tried with the ordinary system
call and its result (success or errno) compared with the documented one.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path
from typing import Any, Callable

import pytest

from eotdlfs.client.ingest import ingest_folder
from tests.client.helpers import client, make_folder

NAME = "posix-ops"
OK = 0


def outcome(call: Callable[[], Any]) -> int:
    """0 when CALL succeeds, else its errno."""
    try:
        result = call()
        if isinstance(result, int) and result > 2:  # a file descriptor
            os.close(result)
        return OK
    except OSError as exc:
        return exc.errno


@pytest.fixture(scope="module")
def tree(module_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    ingest_folder(client(module_server), "datasets", make_folder(tmp_path_factory.mktemp("src") / NAME, NAME, 3))
    return module_server


def read_only_ops(v1: Path, staged: Path) -> dict[str, tuple[Callable[[], Any], int]]:
    f, d = v1 / "part0" / "file0000.txt", v1 / "part0"
    return {
        "open O_RDONLY": (lambda: os.open(f, os.O_RDONLY), OK),
        "open O_WRONLY": (lambda: os.open(f, os.O_WRONLY), errno.EROFS),
        "open O_RDWR": (lambda: os.open(f, os.O_RDWR), errno.EROFS),
        "open O_APPEND": (lambda: os.open(f, os.O_WRONLY | os.O_APPEND), errno.EROFS),
        "open O_TRUNC": (lambda: os.open(f, os.O_WRONLY | os.O_TRUNC), errno.EROFS),
        "create": (lambda: os.open(d / "new.txt", os.O_WRONLY | os.O_CREAT, 0o644), errno.EROFS),
        "truncate": (lambda: os.truncate(f, 0), errno.EROFS),
        "unlink": (lambda: os.unlink(f), errno.EROFS),
        "mkdir": (lambda: os.mkdir(d / "sub"), errno.EROFS),
        "rmdir": (lambda: os.rmdir(d), errno.EROFS),
        "rename in tree": (lambda: os.rename(f, d / "moved.txt"), errno.EROFS),
        "rename to staging": (lambda: os.rename(f, staged / "moved.txt"), errno.EXDEV),
        "chmod": (lambda: os.chmod(f, 0o600), errno.EROFS),
        "chown": (lambda: os.chown(f, os.getuid(), os.getgid()), errno.EROFS),
        "utime": (lambda: os.utime(f, (0, 0)), errno.EROFS),
        "symlink": (lambda: os.symlink("x", d / "link"), errno.EROFS),
        "hard link": (lambda: os.link(f, d / "hard"), errno.EROFS),
        "mkfifo": (lambda: os.mkfifo(d / "fifo"), errno.EROFS),
        "setxattr": (lambda: os.setxattr(f, "user.x", b"1"), errno.EROFS),
        "removexattr": (lambda: os.removexattr(f, "user.eotdl.checksum"), errno.EROFS),
        "getxattr user.eotdl.checksum": (lambda: os.getxattr(f, "user.eotdl.checksum"), OK),
        "getxattr unknown": (lambda: os.getxattr(f, "user.other"), errno.ENODATA),
        "access W_OK": (lambda: _access_write(f), errno.EROFS),
        "stat missing": (lambda: os.stat(d / "missing"), errno.ENOENT),
        "readlink latest": (lambda: os.readlink(v1.parent / "latest"), OK),
        "readlink of a file": (lambda: os.readlink(f), errno.EINVAL),
        "fsync": (lambda: _fsync(f, os.O_RDONLY), OK),
    }


def staging_ops(staged: Path, v1: Path) -> dict[str, tuple[Callable[[], Any], int]]:
    f, d = staged / "part0" / "file0000.txt", staged / "part0"
    return {
        "open O_RDWR": (lambda: os.open(f, os.O_RDWR), OK),
        "create": (lambda: os.open(d / "new.txt", os.O_WRONLY | os.O_CREAT, 0o644), OK),
        "truncate": (lambda: os.truncate(f, 3), OK),
        "mkdir": (lambda: os.mkdir(d / "sub"), OK),
        "rename in record": (lambda: os.rename(d / "new.txt", d / "sub" / "new.txt"), OK),
        "rename to read-only tree": (lambda: os.rename(d / "sub" / "new.txt", v1 / "x.txt"), errno.EXDEV),
        "mkdir new record": (lambda: os.mkdir(staged.parent / "other-rec"), OK),
        "rename across records": (lambda: os.rename(f, staged.parent / "other-rec" / "x"), errno.EXDEV),
        "unlink": (lambda: os.unlink(d / "sub" / "new.txt"), OK),
        "rmdir": (lambda: os.rmdir(d / "sub"), OK),
        "rmdir not empty": (lambda: os.rmdir(d), errno.ENOTEMPTY),
        "chmod": (lambda: os.chmod(f, 0o600), OK),
        "chown (ignored)": (lambda: os.chown(f, os.getuid(), os.getgid()), OK),
        "utime": (lambda: os.utime(f, (1, 1)), OK),
        "symlink": (lambda: os.symlink("x", d / "link"), OK),
        "readlink": (lambda: os.readlink(d / "link"), OK),
        "hard link": (lambda: os.link(f, d / "hard"), OK),
        "hard link to a published version": (lambda: os.link(v1 / "part0" / "file0000.txt", d / "hard2"), errno.EXDEV),
        "mkfifo": (lambda: os.mkfifo(d / "fifo"), OK),
        "setxattr other": (lambda: os.setxattr(f, "user.x", b"1"), errno.ENOTSUP),
        "rmdir published record": (lambda: os.rmdir(staged), errno.EPERM),
        "mkdir bad record name": (lambda: os.mkdir(staged.parent / "no"), errno.EPERM),
        "removexattr": (lambda: os.removexattr(f, "user.x"), errno.ENODATA),
        "getxattr user.eotdl.checksum": (lambda: os.getxattr(f, "user.eotdl.checksum"), errno.ENODATA),
        "access W_OK": (lambda: _access_write(f), OK),
        "readlink of a file": (lambda: os.readlink(f), errno.EINVAL),
        "stat missing": (lambda: os.stat(d / "missing"), errno.ENOENT),
        "fsync": (lambda: _fsync(f, os.O_RDWR), OK),
    }


def _access_write(path: Path) -> None:
    """access(2) with W_OK, raising its errno (os.access only says False)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.access(os.fsencode(path), os.W_OK) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(path))


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_every_operation_gives_its_documented_result(tree: Any, mount_factory: Any) -> None:
    mount = mount_factory(tree)
    v1, staged = mount.path / "datasets" / NAME / "v1", mount.path / "staging" / "datasets" / NAME
    got = {f"read-only {op}": outcome(call) for op, (call, _) in read_only_ops(v1, staged).items()}
    got.update({f"staging {op}": outcome(call) for op, (call, _) in staging_ops(staged, v1).items()})
    want = {f"read-only {op}": code for op, (_, code) in read_only_ops(v1, staged).items()}
    want.update({f"staging {op}": code for op, (_, code) in staging_ops(staged, v1).items()})
    names = lambda d: {k: errno.errorcode.get(v, "OK") for k, v in d.items()}  # noqa: E731
    assert names(got) == names(want)
