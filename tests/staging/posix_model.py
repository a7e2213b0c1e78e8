"""Path-based POSIX operations on two backends (a real folder, a StagingOverlay) and a seeded random program.

The randomized tests run the same program on a plain local folder (the reference) and on
staging (the overlay directly, or a real mount through `FolderBackend`) and compare every
outcome (success or errno) and then the whole tree.
"""

from __future__ import annotations

import errno
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from eotdlfs.fs.staging.overlay import StagingOverlay


class Backend(Protocol):
    def write(self, path: str, offset: int, data: bytes) -> None: ...
    def truncate(self, path: str, length: int) -> None: ...
    def rename(self, old: str, new: str) -> None: ...
    def unlink(self, path: str) -> None: ...
    def mkdir(self, path: str) -> None: ...
    def rmdir(self, path: str) -> None: ...
    def read(self, path: str) -> bytes: ...
    def tree(self) -> dict[str, bytes | None]: ...


class FolderBackend:
    """Ordinary system calls under ROOT (a local folder, or a staging folder of a mount)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _p(self, path: str) -> str:
        return os.path.join(self.root, path)

    def write(self, path: str, offset: int, data: bytes) -> None:
        fd = os.open(self._p(path), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, data, offset)
        finally:
            os.close(fd)

    def truncate(self, path: str, length: int) -> None:
        os.truncate(self._p(path), length)

    def rename(self, old: str, new: str) -> None:
        os.rename(self._p(old), self._p(new))

    def unlink(self, path: str) -> None:
        os.unlink(self._p(path))

    def mkdir(self, path: str) -> None:
        os.mkdir(self._p(path))

    def rmdir(self, path: str) -> None:
        os.rmdir(self._p(path))

    def read(self, path: str) -> bytes:
        with open(self._p(path), "rb") as f:
            return f.read()

    def tree(self) -> dict[str, bytes | None]:
        """Every path below the root: bytes for files, None for folders."""
        found: dict[str, bytes | None] = {}
        for folder, dirs, files in os.walk(self.root):
            rel = os.path.relpath(folder, self.root)
            for d in dirs:
                found[os.path.normpath(os.path.join(rel, d))] = None
            for f in files:
                found[os.path.normpath(os.path.join(rel, f))] = self.read(os.path.join(rel, f))
        return found


class OverlayBackend:
    """The same operations called on a StagingOverlay the way the FUSE shim calls them."""

    def __init__(self, overlay: StagingOverlay):
        self.overlay = overlay

    def write(self, path: str, offset: int, data: bytes) -> None:
        ov = self.overlay
        fh = ov.open(path, os.O_WRONLY) if ov.exists(path) else ov.create(path, 0o644)
        try:
            ov.write(fh, data, offset)
        finally:
            ov.release(fh)

    def truncate(self, path: str, length: int) -> None:
        self.overlay.truncate(path, length)

    def rename(self, old: str, new: str) -> None:
        self.overlay.rename(old, new)

    def unlink(self, path: str) -> None:
        self.overlay.unlink(path)

    def mkdir(self, path: str) -> None:
        self.overlay.mkdir(path, 0o755)

    def rmdir(self, path: str) -> None:
        self.overlay.rmdir(path)

    def read(self, path: str) -> bytes:
        ov = self.overlay
        fh = ov.open(path, os.O_RDONLY)
        try:
            size = ov.getattr(path)["st_size"]
            return ov.read(fh, size + 1, 0)
        finally:
            ov.release(fh)

    def tree(self) -> dict[str, bytes | None]:
        found: dict[str, bytes | None] = {}
        stack = [""]
        while stack:
            folder = stack.pop()
            for name in self.overlay.readdir(folder):
                path = f"{folder}/{name}" if folder else name
                if self.overlay.getattr(path)["st_mode"] & 0o040000:
                    found[path] = None
                    stack.append(path)
                else:
                    found[path] = self.read(path)
        return found


@dataclass(frozen=True)
class Op:
    name: str
    args: tuple

    def run(self, backend: Backend) -> int:
        """0 on success, else the errno the backend raised."""
        try:
            getattr(backend, self.name)(*self.args)
        except OSError as exc:
            return exc.errno
        return 0


NAMES = ("a", "b", "c", "d.txt", "e.bin")


def random_program(seed: int, count: int, initial: dict[str, bytes | None]) -> list[Op]:
    """COUNT operations over a small name pool (so collisions, renames over, ENOTEMPTY... happen).

    Paths are drawn from the names seen so far and fresh names below them, so the program
    does not depend on any backend's answers."""
    rng = random.Random(seed)
    known = set(initial) | {""}
    dirs_known = {p for p, v in initial.items() if v is None} | {""}

    def any_path() -> str:
        if rng.random() < 0.6 and len(known) > 1:
            return rng.choice(sorted(known - {""}))
        parent = rng.choice(sorted(dirs_known))
        return f"{parent}/{rng.choice(NAMES)}" if parent else rng.choice(NAMES)

    ops = []
    for _ in range(count):
        kind = rng.choices(("write", "truncate", "rename", "unlink", "mkdir", "rmdir", "read"),
                           weights=(30, 8, 14, 8, 12, 6, 6))[0]
        path = any_path()
        if kind == "write":
            data = rng.randbytes(rng.choice((0, 1, 100, 5000, 70000)))
            ops.append(Op("write", (path, rng.choice((0, 0, 10, 4096, 100000)), data)))
        elif kind == "truncate":
            ops.append(Op("truncate", (path, rng.choice((0, 3, 5000, 200000)))))
        elif kind == "rename":
            new = any_path()
            ops.append(Op("rename", (path, new)))
            known.add(new)
            if path in dirs_known:
                dirs_known.add(new)
        elif kind == "mkdir":
            ops.append(Op("mkdir", (path,)))
            dirs_known.add(path)
        else:
            ops.append(Op(kind, (path,)))
        known.add(path)
    return ops


def run_both(ops: list[Op], reference: Backend, staging: Backend,
             check_every: int = 50, on_step: Callable[[int], None] | None = None) -> None:
    """Run OPS on both backends; every outcome and, every CHECK_EVERY steps, the trees must agree."""
    for i, op in enumerate(ops):
        expected, got = op.run(reference), op.run(staging)
        assert got == expected, (
            f"step {i} {op.name}{op.args[:2]}: staging {errno.errorcode.get(got, got)}"
            f" != reference {errno.errorcode.get(expected, expected)}")
        if on_step:
            on_step(i)
        if (i + 1) % check_every == 0:
            assert staging.tree() == reference.tree(), f"trees differ after step {i}"
    assert staging.tree() == reference.tree()
