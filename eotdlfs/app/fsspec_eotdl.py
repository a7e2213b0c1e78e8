"""`eotdl://` for fsspec: the mount's tree without FUSE (pandas, rasterio, xarray, Dask, ...).

Registered through the `fsspec.specs` entry point, so after `pip install eotdlfs`
`fsspec.open("eotdl://datasets/NAME/v2/x.tif", api_url=...)` and
`fsspec.filesystem("eotdl", api_url=...)` work. The tree is the mount's: `datasets/NAME/vN/...`,
`datasets/NAME/latest` (listed as a link, followed in paths), `models/...`. An adapter like the
FUSE one: a `Connection` (app/connection.py) holds the settings, the client and the read path
(the mount's block cache, fetcher and checks, in the mount's cache dir by default); this class
only turns fsspec calls into it. Versions are read-only: `put(folder, "datasets/NAME")` ingests
a folder as NAME's next version (a folder equal to the latest is a no-op); every other write raises.

A fork (a worker process) gets a connection of its own on first use: the fetcher's threads
and the client's sockets do not cross `fork`.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from fsspec.spec import AbstractFileSystem

from eotdlfs.app.connection import DEFAULT_CACHE_SIZE, Connection, connect
from eotdlfs.fs.mount import parse_size
from eotdlfs.fs.namespace import FILE, LATEST, Node
from eotdlfs.metadata import KINDS
from eotdlfs.repository import IngestResult, NothingToIngest

READ_ONLY = "versions are read-only; publish a new version with fs.put(local_folder, 'datasets/NAME')"


class EotdlFileSystem(AbstractFileSystem):
    """The EOTDL repository (or any eotdlfs server) as an fsspec filesystem, protocol `eotdl`."""

    protocol = "eotdl"
    root_marker = ""

    def __init__(self, api_url: str | None = None, token: str | None = None, cache_dir: str | None = None,
                 cache_size: int | str = DEFAULT_CACHE_SIZE, ttl: float = 10.0, **kwargs: Any):
        super().__init__(**kwargs)
        self._options = {"api_url": api_url, "token": token, "cache_dir": cache_dir, "ttl": ttl,
                         "cache_size": parse_size(cache_size) if isinstance(cache_size, str) else cache_size}
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        self._pid = os.getpid()

    @property
    def connection(self) -> Connection:
        """This process's connection, made on first use."""
        with self._lock:
            if self._connection is None or self._pid != os.getpid():
                self._connection, self._pid = connect(**self._options), os.getpid()
            return self._connection

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        path = super()._strip_protocol(path)
        return "/".join(p for p in path.split("/") if p)

    # --- reading ---------------------------------------------------------------------------

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list:
        path = self._strip_protocol(path)
        node = self._node(path)
        if node.type == FILE:
            entries = [self._file_info(path, node)]
        else:
            follow = kwargs.get("follow_latest", False)
            entries = [self._child_info(path, name, follow) for name in self._listdir(path)]
        return entries if detail else [e["name"] for e in entries]

    def glob(self, path: str, maxdepth: int | None = None, **kwargs: Any) -> Any:
        """As a shell glob on the mount: `datasets/*/latest/labels.csv` matches through the latest
        link (its walk follows links), where `find` does not walk into latest."""
        return super().glob(path, maxdepth=maxdepth, follow_latest=True, **kwargs)

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        node = self._node(path)
        if node.type == FILE:
            return self._file_info(path, node)
        info = self._dir_info(path, node)
        if path.count("/") == 2 and path.endswith("/" + LATEST):
            info.update(islink=True, destination=self._destination(path))
        return info

    def modified(self, path: str) -> datetime:
        """PATH's mtime on the mount: a file's is when its file version was made (a file carried
        unchanged into later versions keeps it), a folder's when its version was published."""
        return datetime.fromtimestamp(self.info(path)["mtime"], timezone.utc)

    def created(self, path: str) -> datetime:
        """As `modified`: a file version never changes once made (fsspec's default raised NotImplementedError)."""
        return self.modified(path)

    @property
    def open(self) -> Callable[..., Any]:
        """fsspec's `fs.open(path, mode="rb", ...)`. Once rasterio is imported, also a multi-range
        opener for it: `rasterio.open(fsspec.open(url))` opens through `fp.fs.open`, and GDAL then
        asks for a window's tiles at once (`RemoteFile.get_byte_ranges`), not one after the other."""
        opener = _rasterio_opener_class()
        return super().open if opener is None else opener(self)

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None, autocommit: bool = True,
              cache_options: dict | None = None, **kwargs: Any):
        path = self._strip_protocol(path)
        if mode != "rb":
            self._refuse(path, f"open with mode {mode!r}")
        file = self.connection.open(path)
        file.fs, file.version_path = self, self.connection.tree_path(path).lstrip("/")
        return file

    def _node(self, path: str) -> Node:
        return self.connection.resolve(path)

    def _listdir(self, path: str) -> list[str]:
        connection = self.connection
        return connection.reading().namespace.listdir(connection.tree_path(path))

    def _child_info(self, parent: str, name: str, follow_latest: bool = False) -> dict[str, Any]:
        path = f"{parent}/{name}" if parent else name
        if parent.count("/") == 1 and name == LATEST and not follow_latest:  # a link, as `ls -l` shows it
            node = self._node(path)
            return {"name": path, "type": "link", "size": 0, "destination": self._destination(path),
                    "version": node.version, "mtime": node.mtime}
        node = self._node(path)
        return self._file_info(path, node) if node.type == FILE else self._dir_info(path, node)

    def _destination(self, latest: str) -> str:
        return latest.rsplit("/", 1)[0] + "/" + self.connection.tree_path(latest).rsplit("/", 1)[1]

    @staticmethod
    def _file_info(path: str, node: Node) -> dict[str, Any]:
        entry = node.entry
        return {"name": path, "type": "file", "size": entry.size, "checksum": entry.checksum,
                "version": node.version, "file_version": entry.file_version, "mtime": node.mtime}

    @staticmethod
    def _dir_info(path: str, node: Node) -> dict[str, Any]:
        """A folder's size is 0, as on the mount and as fsspec's `du` counts folders (a version's
        folder sized as the version made `du` of its record count every file twice); `fs.du(path)`
        is a version's size."""
        info = {"name": path, "type": "directory", "size": 0, "mtime": node.mtime}
        if node.version:
            info["version"] = node.version
        return info

    # --- writing: whole versions only --------------------------------------------------------

    def put(self, lpath: str, rpath: str, recursive: bool = False, callback: Any = None, maxdepth: int | None = None,
            **kwargs: Any) -> IngestResult:
        """Ingest the local folder LPATH as the next version of RPATH ('datasets/NAME'), through the
        ingestion engine (only new and changed files sent). LPATH's metadata.yml (or STAC catalog.json) must name NAME.
        A folder identical to the latest version makes no version, as a put of identical files changes nothing:
        the result names that version, with nothing sent."""
        if not isinstance(lpath, (str, os.PathLike)) or not isinstance(rpath, str):
            raise NotImplementedError("eotdl:// ingests one folder at a time: fs.put(local_folder, 'datasets/NAME')")
        parts = self._strip_protocol(rpath).split("/")
        folder = Path(lpath)
        if not folder.exists():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(lpath))
        if len(parts) != 2 or parts[0] not in KINDS or not folder.is_dir():
            raise NotImplementedError(f"eotdl:// ingests a whole folder as a record's next version: "
                                      f"fs.put(local_folder, 'datasets/NAME'), not {lpath!r} -> {rpath!r}")
        from eotdlfs.client.ingest import folder_name  # the ingestion engine only for a put

        named = folder_name(folder)  # metadata.yml's name, or a STAC catalog's id
        if named != parts[1]:
            raise ValueError(f"{folder} names {named!r} (its metadata.yml or catalog.json), not {parts[1]!r}")
        try:
            result = self.connection.ingest(folder, parts[0])
        except NothingToIngest as exc:
            return IngestResult(exc.version, uploaded=0, carried=0, dropped=0, bytes_sent=0)
        self.invalidate_cache()
        return result

    def get_file(self, rpath: str, lpath: Any = None, *args: Any, **kwargs: Any) -> None:
        """As fsspec's, but a record's `latest` is not made a folder: a link to a version, it is
        not walked into, so met in a walk of the record it would be an empty folder beside the
        version it names; asked for itself, its files make the folder as they are copied."""
        parts = self._strip_protocol(rpath).split("/")
        if isinstance(lpath, (str, os.PathLike)) and len(parts) == 3 and parts[0] in KINDS and parts[2] == LATEST:
            return
        super().get_file(rpath, lpath, *args, **kwargs)

    def _refuse(self, path: str, what: str) -> None:
        """Raise: PermissionError inside a version, NotImplementedError elsewhere."""
        parts = self._strip_protocol(path).split("/")
        if len(parts) >= 3 and parts[0] in KINDS:
            raise PermissionError(errno.EROFS, f"{what}: {READ_ONLY}", path)
        raise NotImplementedError(f"eotdl:// cannot {what} {path!r}: {READ_ONLY}")

    def put_file(self, lpath: str, rpath: str, *args: Any, **kwargs: Any) -> None:
        self._refuse(rpath, "put a single file")

    def pipe_file(self, path: str, value: bytes, *args: Any, **kwargs: Any) -> None:
        self._refuse(path, "write")

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        self._refuse(path2, "copy to")

    def mv(self, path1: str, path2: str, *args: Any, **kwargs: Any) -> None:
        self._refuse(path1, "move")

    def rm_file(self, path: str) -> None:
        self._refuse(path, "remove")

    def rm(self, path: str, recursive: bool = False, maxdepth: int | None = None) -> None:
        self._refuse(path if isinstance(path, str) else path[0], "remove")

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        self.makedirs(path)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        """A folder that exists is there already (FileExistsError, or nothing with EXIST_OK, as
        `mkdir -p` on a read-only mount): fsspec's mapper and writers make a key's folder first."""
        if self.isdir(path):
            if exist_ok:
                return
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), self._strip_protocol(path))
        self._refuse(path, "make a folder")

    def rmdir(self, path: str) -> None:
        self._refuse(path, "remove")

    def touch(self, path: str, truncate: bool = True, **kwargs: Any) -> None:
        self._refuse(path, "touch")


class _Opener:
    """`fs.open` as rasterio's Python opener sees it: callable as `fs.open`, and the file
    container rasterio asks for stat, listing and multi-range reads. Its methods are copied into
    a subclass of rasterio's container (`_rasterio_opener_class`) rather than inherited: with
    `_Opener` among its bases, rasterio's dispatch sees a plain callable first and reads one
    range at a time."""

    def __init__(self, fs: EotdlFileSystem):
        self.fs = fs

    def __call__(self, path: str, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
        return AbstractFileSystem.open(self.fs, path, mode, *args, **kwargs)

    open = __call__

    def isfile(self, path: str) -> bool:
        return self.fs.isfile(path)

    def isdir(self, path: str) -> bool:
        return self.fs.isdir(path)

    def ls(self, path: str) -> list[str]:
        """Nothing, as rasterio's adapter of a plain opener says: GDAL lists a file's folder to look
        for side-car files, and the folder may hold 10,000 files (/vsicurl/ users turn it off)."""
        return []

    def mtime(self, path: str) -> int:
        return int(self.fs.modified(path).timestamp())

    def rm(self, path: str) -> None:
        self.fs.rm_file(path)

    def size(self, path: str) -> int:
        return self.fs.size(path)


_OPENER_CLASS: list[type] = []  # _Opener's methods on rasterio's multi-range container, made once


def _rasterio_opener_class() -> type | None:
    """`_Opener` as a subclass of rasterio's `MultiByteRangeResourceContainer` (rasterio gives GDAL
    the multi-range read only for those); None until rasterio is imported (not imported here: it
    costs half a second) or when it has no such class."""
    if not _OPENER_CLASS:
        container = getattr(sys.modules.get("rasterio._vsiopener"), "MultiByteRangeResourceContainer", None)
        if container is None:
            return None
        methods = {k: v for k, v in vars(_Opener).items() if k not in ("__dict__", "__weakref__")}
        _OPENER_CLASS.append(type("EotdlRasterioOpener", (container,), methods))
    return _OPENER_CLASS[0]
