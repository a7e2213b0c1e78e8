"""The persisted state of one staged record: its tree, the base version it started from, and small key/values.

One SQLite database per record (`<cache>/staging/<kind>/<name>/journal.sqlite`, WAL mode):
a process killed at any point leaves the state either before or after each change. A
record nobody has changed keeps its journal in memory, so merely listing `staging/`
writes nothing to disk; the first change makes it durable (`make_durable`).

The tree is a table of nodes, one per path ('' is the record root): a directory, a
file whose bytes are either a staged upper file (`upper`, an id in the upper folder) or
a file of the base version (`base_path`, the path it has in the base listing), or a node
a disk keeps but a version does not (its type in `mode`): a symlink (`target`), a FIFO, a
socket, a device (`rdev`). Hard links are file nodes sharing an `ino` (rows and
writes: `nodetable`).

Locks. `StagingJournal._lock` (an RLock) guards the SQLite connection and the path of its
file; a transaction holds it from begin to commit. It is taken inside a StagingOverlay's
lock, never the other way round, and nothing else is called while it is held.
"""

from __future__ import annotations

import errno
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterable

from eotdlfs.diskfull import is_disk_full
from eotdlfs.fs.staging.nodetable import NODE_COLUMNS, Node, NodeWriter, below, node_of, parent_of
from eotdlfs.repository import FileEntry

JOURNAL_FILE = "journal.sqlite"
STAGING_FOLDER = "staging"  # of the cache dir: a record's journal is in STAGING_FOLDER/KIND/NAME/
DIR_MODE = 0o040755

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS base (path TEXT PRIMARY KEY, file_version INTEGER NOT NULL,
                                 checksum TEXT NOT NULL, size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (path TEXT PRIMARY KEY, parent TEXT, is_dir INTEGER NOT NULL,
                                  upper TEXT, base_path TEXT, mode INTEGER NOT NULL,
                                  mtime_ns INTEGER NOT NULL, uid INTEGER, gid INTEGER,
                                  atime_ns INTEGER, ctime_ns INTEGER, target TEXT, rdev INTEGER, ino INTEGER);
CREATE INDEX IF NOT EXISTS nodes_parent ON nodes(parent);
CREATE TABLE IF NOT EXISTS copies (upper TEXT PRIMARY KEY, checksum TEXT NOT NULL);
"""
# copies: staged files not written since their copy-up (`touch` opens for writing, writes nothing),
# with the SHA-1 they were copied with: equal to the base file's, they are no change.
# Columns added after the first release, with the type an older journal gets them as.
_ADDED_COLUMNS = {"uid": "INTEGER", "gid": "INTEGER", "atime_ns": "INTEGER", "ctime_ns": "INTEGER",
                  "target": "TEXT", "rdev": "INTEGER", "ino": "INTEGER"}
_FILE = "is_dir = 0 AND (mode & 61440) = 32768"  # S_ISREG: a file a version holds
# A base path no file has, nor a symlink (a published symlink stays one in staging: its path, or the
# paths below it for a folder's, are what it published as).
_GONE = (f"path NOT IN (SELECT path FROM nodes WHERE {_FILE}) AND NOT EXISTS (SELECT 1 FROM nodes s WHERE"
         " s.target IS NOT NULL AND (s.path = base.path OR (base.path > s.path || '/' AND base.path < s.path || '0')))")
LINKS_PUBLISHED = "links_published_ns"  # meta: when the symlinks of the last published version were frozen


class StagingJournal:
    """The node table, base listing and key/values of one record; thread-safe.

    Reads see committed state; changes go through `transaction()`, all or nothing.
    """

    def __init__(self, folder: Path):
        # set once
        self.folder = folder
        self._lock = threading.RLock()
        # guarded by _lock
        path = folder / JOURNAL_FILE
        self._db_path: Path | None = path if path.exists() else None
        self._db = self._connect(self._db_path)

    @staticmethod
    def _connect(path: Path | None) -> sqlite3.Connection:
        db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False, isolation_level=None)
        if path:
            db.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL loses nothing committed when the process is killed; only power loss could.
            db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        present = {row[1] for row in db.execute("PRAGMA table_info(nodes)")}
        for column, kind in _ADDED_COLUMNS.items():
            if column not in present:  # a journal an older eotdlfs wrote: its nodes belong to the mount's user
                db.execute(f"ALTER TABLE nodes ADD COLUMN {column} {kind}")
        return db

    @property
    def durable(self) -> bool:
        with self._lock:
            return self._db_path is not None

    def make_durable(self) -> None:
        """Move an in-memory journal to disk (no-op when it is there already)."""
        with self._lock:
            if self._db_path is not None:
                return
            self.folder.mkdir(parents=True, exist_ok=True)
            target, tmp = self.folder / JOURNAL_FILE, self.folder / (JOURNAL_FILE + ".tmp")
            tmp.unlink(missing_ok=True)
            disk = sqlite3.connect(str(tmp))
            try:
                self._db.backup(disk)
            except sqlite3.Error as error:
                tmp.unlink(missing_ok=True)
                raise disk_error(error) from error
            finally:
                disk.close()
            tmp.replace(target)
            self._db.close()
            self._db_path = target
            self._db = self._connect(target)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def transaction(self) -> "_Transaction":
        return _Transaction(self)

    # -- whole-tree changes -------------------------------------------------------------

    def load_base(self, version: int | None, entries: Iterable[FileEntry], mtime_ns: int) -> None:
        """Start over: the tree becomes exactly the base listing of VERSION (None: a new, empty record)."""
        entries = list(entries)
        dirs = {""}
        for entry in entries:
            parent = parent_of(entry.path)
            while parent is not None and parent not in dirs:
                dirs.add(parent)
                parent = parent_of(parent)
        with self.transaction() as tx:
            tx.execute("DELETE FROM base")
            tx.execute("DELETE FROM nodes")
            tx.executemany("INSERT INTO base VALUES (?, ?, ?, ?)",
                           ((e.path, e.file_version, e.checksum, e.size) for e in entries))
            tx.put_many(Node(d, True, mode=DIR_MODE, mtime_ns=mtime_ns) for d in dirs)
            tx.put_many(Node(e.path, False, base_path=e.path, mtime_ns=int(e.mtime(mtime_ns, 1e9))) for e in entries)
            tx.set_meta("base_version", version)

    def merge_base(self, version: int, entries: Iterable[FileEntry], mtime_ns: int) -> list[str]:
        """Move staging onto VERSION, a newer version published meanwhile; staged changes win.

        Files staged here stay as they are, and paths deleted here stay deleted; files left
        untouched here take VERSION's content, or go when VERSION dropped them; files new
        in VERSION appear. No file may be a renamed base file (copy those up first).
        Returns the paths of VERSION that could not appear because a staged file sits on
        their folder's path.
        """
        new = {e.path: e for e in entries}
        with self.transaction() as tx:
            old = {r[0] for r in tx.execute("SELECT path FROM base")}
            present = {n.path: n for n in tx.nodes("1")}
            if any(n.is_file and n.upper is None and n.base_path != n.path for n in present.values()):
                raise ValueError("copy up renamed base files before merging")
            gone = [(p,) for p, n in present.items() if n.is_file and n.upper is None and p not in new]
            tx.executemany("DELETE FROM nodes WHERE path = ?", gone)
            blocked, added = [], []
            for path in sorted(set(new) - old - set(present)):
                parents, parent = [], parent_of(path)
                while parent and parent not in present:
                    parents.append(parent)
                    parent = parent_of(parent)
                if parent and not present[parent].is_dir:
                    blocked.append(path)
                    continue
                for folder in parents:
                    present[folder] = Node(folder, True, mode=DIR_MODE, mtime_ns=mtime_ns)
                    added.append(present[folder])
                present[path] = Node(path, False, base_path=path, mtime_ns=int(new[path].mtime(mtime_ns, 1e9)))
                added.append(present[path])
            tx.put_many(added)
            tx.execute("DELETE FROM base")
            tx.executemany("INSERT INTO base VALUES (?, ?, ?, ?)",
                           ((e.path, e.file_version, e.checksum, e.size) for e in new.values()))
            tx.set_meta("base_version", version)
        return blocked

    def rebase(self, version: int, entries: Iterable[FileEntry], published: dict[str, str],
               mtimes: dict[str, int], made: dict[str, int]) -> None:
        """Make VERSION the base; files whose bytes it now holds become base files.

        PUBLISHED maps a source key (an upper id, or 'base:' + old base path) to the path
        those bytes have in VERSION; other staged files stay staged. MTIMES are the staged
        files' modification times, kept so rsync's size+mtime check still matches. MADE maps
        the paths of files the flush made (at the record's root) to their mtimes: they become
        base files unless a file was staged there meanwhile. Raises ValueError, changing
        nothing, if a base file would point at bytes VERSION lacks.
        """
        remap = [(key[5:], path) for key, path in published.items() if key.startswith("base:") and key[5:] != path]
        uppers = [(path, mtimes[key], key) for key, path in published.items() if not key.startswith("base:")]
        with self.transaction() as tx:
            tx.execute("DELETE FROM base")
            tx.executemany("INSERT INTO base VALUES (?, ?, ?, ?)",
                           ((e.path, e.file_version, e.checksum, e.size) for e in entries))
            # One statement for all moves, so a rename chain (a->b, b->c) cannot apply twice.
            tx.execute("CREATE TEMP TABLE IF NOT EXISTS remap (old TEXT PRIMARY KEY, new TEXT)")
            tx.execute("DELETE FROM remap")
            tx.executemany("INSERT INTO remap VALUES (?, ?)", remap)
            tx.execute("UPDATE nodes SET base_path = (SELECT new FROM remap WHERE old = nodes.base_path)"
                       " WHERE upper IS NULL AND base_path IN (SELECT old FROM remap)")
            tx.executemany("UPDATE nodes SET upper = NULL, base_path = ?, mtime_ns = ? WHERE upper = ?", uppers)
            for path, mtime_ns in made.items():
                if tx.execute("SELECT 1 FROM nodes WHERE path = ?", (path,)).fetchone() is None:
                    tx.put_many([Node(path, False, base_path=path, mtime_ns=mtime_ns)])
            # A file published under two names (hard links) points at the one with its own path.
            tx.execute("UPDATE nodes SET base_path = path WHERE upper IS NULL AND base_path != path AND"
                       " (SELECT checksum FROM base WHERE path = nodes.path) ="
                       " (SELECT checksum FROM base WHERE path = nodes.base_path)")
            lost = tx.execute(f"SELECT path FROM nodes WHERE {_FILE} AND upper IS NULL"
                              " AND base_path NOT IN (SELECT path FROM base) LIMIT 1").fetchone()
            if lost:
                raise ValueError(f"{lost[0]}: its bytes are in neither version {version} nor staging")
            tx.set_meta("base_version", version)

    # -- reads --------------------------------------------------------------------------

    def get_meta(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value: Any) -> None:
        with self.transaction() as tx:
            tx.set_meta(key, value)

    def node(self, path: str) -> Node | None:
        with self._lock:
            row = self._db.execute(f"SELECT {NODE_COLUMNS} FROM nodes WHERE path = ?", (path,)).fetchone()
        return node_of(row) if row else None

    def children(self, path: str) -> list[Node]:
        with self._lock:
            rows = self._db.execute(f"SELECT {NODE_COLUMNS} FROM nodes WHERE parent = ? ORDER BY path",
                                    (path,)).fetchall()
        return [node_of(r) for r in rows]

    def subfolders(self, path: str) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM nodes WHERE parent = ? AND is_dir = 1", (path,)).fetchone()[0]

    def below(self, path: str) -> list[Node]:
        """Every node strictly below PATH."""
        where, args = below(path)
        with self._lock:
            rows = self._db.execute(f"SELECT {NODE_COLUMNS} FROM nodes WHERE {where} ORDER BY path", args).fetchall()
        return [node_of(r) for r in rows]

    def has_children(self, path: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM nodes WHERE parent = ? LIMIT 1", (path,)).fetchone() is not None

    def files(self) -> list[Node]:
        with self._lock:
            rows = self._db.execute(f"SELECT {NODE_COLUMNS} FROM nodes WHERE {_FILE} ORDER BY path").fetchall()
        return [node_of(r) for r in rows]

    def special_nodes(self) -> list[Node]:
        """Nodes a version cannot hold as they are: symlinks, FIFOs, sockets, devices."""
        with self._lock:
            rows = self._db.execute(f"SELECT {NODE_COLUMNS} FROM nodes WHERE is_dir = 0 AND NOT ({_FILE})"
                                    " ORDER BY path").fetchall()
        return [node_of(r) for r in rows]

    def base_entry(self, path: str) -> FileEntry | None:
        with self._lock:
            row = self._db.execute("SELECT path, file_version, checksum, size FROM base WHERE path = ?",
                                   (path,)).fetchone()
        return FileEntry(*row) if row else None

    def file_sources(self) -> list[tuple[str, str | None, FileEntry | None]]:
        """Every file as (path, upper id, base entry of its bytes when not staged)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT n.path, n.upper, b.path, b.file_version, b.checksum, b.size FROM nodes n"
                f" LEFT JOIN base b ON n.upper IS NULL AND b.path = n.base_path WHERE n.{_FILE} ORDER BY n.path"
            ).fetchall()
        return [(r[0], r[1], FileEntry(*r[2:]) if r[2] is not None else None) for r in rows]

    def changes(self) -> tuple[list[tuple[str, str | None, bool]], list[tuple[str, int]], list[str]]:
        """Staged files as (path, upper id, path in base), base files moved as (path, size), base paths gone."""
        with self._lock:
            staged = self._db.execute(
                "SELECT n.path, n.upper, b.path IS NOT NULL FROM nodes n LEFT JOIN base b ON b.path = n.path"
                " LEFT JOIN copies c ON c.upper = n.upper WHERE n.upper IS NOT NULL"
                " AND (c.checksum IS NULL OR c.checksum IS NOT b.checksum) ORDER BY n.path").fetchall()
            moved = self._db.execute(
                "SELECT n.path, b.size FROM nodes n JOIN base b ON b.path = n.base_path"
                " WHERE n.upper IS NULL AND n.is_dir = 0 AND n.base_path != n.path ORDER BY n.path").fetchall()
            gone = self._db.execute(f"SELECT path FROM base WHERE {_GONE} ORDER BY path").fetchall()
        return [(p, u, bool(b)) for p, u, b in staged], moved, [r[0] for r in gone]

    def copy_checksum(self, upper: str) -> str | None:
        """The SHA-1 staged file UPPER was copied up with, while it is unwritten since."""
        with self._lock:
            row = self._db.execute("SELECT checksum FROM copies WHERE upper = ?", (upper,)).fetchone()
        return row[0] if row else None

    def forget_copy(self, upper: str) -> None:
        """Staged file UPPER is about to be written: its bytes may differ from those copied up."""
        with self.transaction() as tx:
            tx.execute("DELETE FROM copies WHERE upper = ?", (upper,))

    def has_changes(self) -> bool:
        """True when the tree differs from the base listing in any file (cheaper than `changes`): a file
        staged, moved or gone, a symlink made or moved since LINKS_PUBLISHED, or a node a flush refuses."""
        with self._lock:
            if self._db.execute("SELECT 1 FROM nodes WHERE is_dir = 0 AND (upper IS NOT NULL OR base_path != path)"
                                " LIMIT 1").fetchone():
                return True
            if self._db.execute(f"SELECT 1 FROM nodes WHERE is_dir = 0 AND NOT ({_FILE}) AND (target IS NULL OR"
                                " max(mtime_ns, coalesce(ctime_ns, 0)) > ?) LIMIT 1",
                                (self.get_meta(LINKS_PUBLISHED, 0),)).fetchone():
                return True
            return self._db.execute(f"SELECT 1 FROM base WHERE {_GONE} LIMIT 1").fetchone() is not None

    def links(self, ino: int | None) -> int:
        """How many names the hard-link group INO has (1 for a single name)."""
        if ino is None:
            return 1
        with self._lock:
            return self._db.execute("SELECT count(*) FROM nodes WHERE ino = ?", (ino,)).fetchone()[0]

    def upper_in_use(self, upper: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM nodes WHERE upper = ? LIMIT 1", (upper,)).fetchone() is not None

    def new_ino(self) -> int:
        with self._lock:
            return (self._db.execute("SELECT max(ino) FROM nodes").fetchone()[0] or 0) + 1

    def empty_folders(self) -> list[str]:
        """Folders with nothing in them (the record's own folder aside): a version holds files only."""
        with self._lock:
            rows = self._db.execute("SELECT path FROM nodes WHERE is_dir = 1 AND path != '' AND NOT EXISTS"
                                    " (SELECT 1 FROM nodes c WHERE c.parent = nodes.path) ORDER BY path").fetchall()
        return [r[0] for r in rows]

    def upper_ids(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT upper FROM nodes WHERE upper IS NOT NULL")}


class _Transaction:
    """`with journal.transaction() as tx:` holds the journal's lock and commits or rolls back."""

    def __init__(self, journal: StagingJournal):
        self._journal = journal

    def __enter__(self) -> "NodeWriter":
        self._journal._lock.acquire()
        try:
            self._journal._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._journal._lock.release()
            raise
        return NodeWriter(self._journal._db)

    def __exit__(self, exc_type, exc, tb) -> None:
        db = self._journal._db
        try:
            if exc_type is None:
                try:
                    db.execute("COMMIT")
                except sqlite3.Error as error:
                    if db.in_transaction:  # SQLite rolls back by itself on a full disk
                        db.execute("ROLLBACK")
                    raise disk_error(error) from error
            else:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise disk_error(exc) from exc
        finally:
            self._journal._lock.release()


def disk_error(error: sqlite3.Error) -> OSError:
    """A SQLite failure as the OSError a writer should see: ENOSPC when the disk is full, else EIO."""
    return OSError(errno.ENOSPC if is_disk_full(error) else errno.EIO, f"staging journal: {error}")
