"""The read-only tree of the mount: KIND/NAME/vN/<files>, KIND/NAME/latest, as plain data.

Record lists come from the repository and are refreshed after a TTL, in the background while
the list in hand is served (kept on disk too, so a remount works while the server is down),
except to a look for a name the list lacks, which waits for the refresh once a TTL; a
published version's file list never changes, so it is fetched once and kept on disk for good.
Until it is in hand, a path in the version is looked up alone (one small request) and the
whole list follows in the background: a first open does not wait for 10,000 entries. No
caller waits for the server longer than `wait` seconds. What the server lists is checked
with the rules for what we send it (record names, file paths, version numbers): an entry that
breaks them is left out, and logged once. Paths resolve to `Node`s; nothing here knows FUSE or HTTP.

Locks. `Namespace._lock` guards the record lists, their check times and generations, and is
held for dict operations only, never while the repository is asked. `_nodes`, `_versions` and
`_trees` are written under it but read without it on the hot path (`ls -l`, `stat`): each entry
is published data that never changes once written, and a dict lookup is atomic in CPython, so
a reader sees no entry or the right one. `server_reachable` is a plain flag written by the
refreshing thread and by a failed read, stamped with when it was set. Refreshes run in
`BackgroundFetches` (inflight.py), whose lock is a leaf; no other object's lock is taken under `_lock`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Callable

from eotdlfs.fs.inflight import BackgroundFetches
from eotdlfs.fs.kept_lists import record_from_json, record_to_json, write_json
from eotdlfs.fs.nodes import DIR, FILE, LINK, ListedVersion, Node, VersionTree, not_found
from eotdlfs.metadata import KINDS, validate_name
from eotdlfs.oncelog import OnceLog
from eotdlfs.paths import validate_file_path
from eotdlfs.repository import FileEntry, Record, Repository, Version

log = logging.getLogger(__name__)

LATEST = "latest"
_VERSION_DIR = re.compile(r"^v([1-9][0-9]*)\Z")  # not "$": "v1\n" would name v1
MAX_KEPT_NODES = 500_000
LIST_LATER_S = 0.5
LIST_AT_CLOSE_S = 5.0
# A script's lookups in a version, one small request each, before its whole list serves the next: paths
# found, paths missed (opening a TIFF, GDAL looks for 7 sidecar files that are seldom there)
WHOLE_LIST_AFTER = (2, 32)
ABSENT = Node(FILE, 0.0)  # kept for a path a published version lacks: asked once (GDAL probes for sidecar files)


def _version_number(number: object) -> int:
    """NUMBER if it is a version number (a positive whole number); ValueError otherwise."""
    if type(number) is not int or number < 1:
        raise ValueError("not a positive whole number")
    return number


class Namespace:
    def __init__(self, repo: Repository, state_dir: Path, ttl: float = 10.0, wait: float = 65.0,
                 clock: Callable[[], float] = time.monotonic, list_later: bool = True):
        # Set once.
        self.repo = repo
        self.list_later = list_later  # see _look_up
        self.state_dir = Path(state_dir)
        self.ttl = ttl
        self.clock = clock
        self.started = time.time()
        self._fetches = BackgroundFetches(wait)
        self._left_out = OnceLog(log)
        # Guarded by _lock.
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, Record]] = {}
        self._checked: dict[str, float] = {}
        # Bumped by `invalidate`: a refresh begun before then is not kept.
        self._generations: dict[str, int] = {}
        # When a miss past the TTL last began waiting for the refresh (by `clock`), and until when
        # (monotonic) it waits, by kind (see `_after_a_miss`).
        self._missed: dict[str, tuple[float, float]] = {}
        self._trees: dict[tuple[str, int], VersionTree] = {}
        # Written under _lock, read without it (see the module's note on locks).
        # Paths inside a published version never change: resolved once (a path not there as ABSENT), looked up after.
        self._nodes: dict[str, Node] = {}
        # Versions whose file list is loaded, by (kind, name, 'vN'): a file inside one is
        # found with two dict lookups (`ls -l` of a fresh folder asks once per file).
        self._versions: dict[tuple[str, str, str], ListedVersion] = {}
        self._reachable: tuple[bool | None, float] = (None, time.monotonic())
        # Guarded by _lock: versions looked into before their list was in hand (`close` lists them), and
        # how many paths were found and missed in each (see WHOLE_LIST_AFTER).
        self._to_list: dict[tuple[Record, int], tuple[int, int]] = {}
        self._closing = threading.Event()  # the mount's end: their delayed listing starts at once

    # --- what the server lists -----------------------------------------------------------

    def _obeys(self, rule: Callable[[object], object], value: object, what: Callable[[], str]) -> bool:
        """Whether VALUE, listed by the server, passes RULE; if not, WHAT() is left out (logged once)."""
        try:
            rule(value)
        except ValueError as exc:  # MetadataError and BadPath are ValueErrors
            self._left_out.warning(f"left out {what()} listed by the server: {exc}")
            return False
        return True

    def _sound_records(self, kind: str, listed: list[Record]) -> dict[str, Record]:
        """LISTED by name, minus records and versions that break the rules, and records left with
        no published version."""
        records = {}
        for record in listed:
            if not self._obeys(validate_name, record.name, lambda: f"the {kind} record {record.name!r:.300}"):
                continue
            versions = tuple(v for v in record.versions if self._obeys(
                _version_number, v.number, lambda: f"version {v.number!r:.50} of {kind}/{record.name}"))
            if len(versions) != len(record.versions):
                record = replace(record, versions=versions)
            if record.published:
                records[record.name] = record
        return records

    def _sound_files(self, record: Record, number: int, entries: list[FileEntry]) -> list[FileEntry]:
        return [e for e in entries if self._obeys(
            validate_file_path, e.path, lambda: f"the file {e.path!r:.300} of {record.kind}/{record.name} v{number}")]

    # --- records -------------------------------------------------------------------------

    def records(self, kind: str) -> dict[str, Record]:
        """Records of KIND with at least one published version, by name. Past the TTL the list in
        hand is served while one refresh runs in the background; with no list in hand the caller
        waits for one, at most `wait` s, then gets the list kept on disk, or TimeoutError."""
        with self._lock:
            known = self._records.get(kind)
            fresh = self.clock() - self._checked.get(kind, -1e18) < self.ttl
            generation = self._generations.get(kind, 0)
        if known is not None and fresh:
            return known
        if known is not None:
            self._start_refresh(kind, generation)
            return known
        try:
            return self._fetches.result(("records", kind, generation),
                                        functools.partial(self._refresh, kind, generation), f"the list of {kind}")
        except TimeoutError as exc:
            stored = self._load_records(kind)
            if stored is None:
                raise
            log.warning("%s; using the list from before", exc)
            with self._lock:
                return self._records.setdefault(kind, stored)

    @property
    def server_reachable(self) -> bool | None:
        """What the last contact with the repository found (None: not asked yet)."""
        return self._reachable[0]

    @server_reachable.setter
    def server_reachable(self, reachable: bool | None) -> None:
        self._reachable = (reachable, time.monotonic())

    @property
    def reachability_at(self) -> float:
        """When `server_reachable` was last set (time.monotonic())."""
        return self._reachable[1]

    def warm(self) -> list[Future]:
        """Fetch every kind's record list in the background, for a fresh mount's first open (their futures)."""
        with self._lock:
            generations = {kind: self._generations.get(kind, 0) for kind in KINDS}
        return [self._start_refresh(kind, generation) for kind, generation in generations.items()]

    def _start_refresh(self, kind: str, generation: int) -> Future:
        """KIND's record list fetched in the background; the fetch already running if there is one."""
        return self._fetches.start(("records", kind, generation), functools.partial(self._refresh, kind, generation))

    def _after_a_miss(self, kind: str) -> dict[str, Record]:
        """KIND's records once a name was not among them. Past the TTL, the list in hand may predate
        a record or version published elsewhere a moment ago (`eotdlfs ingest` in another shell),
        so its refresh is waited for, at most `wait` s, and the first look finds it. One miss a
        TTL starts that wait and the misses meanwhile share it until it ends; other misses are
        answered from the list in hand at once (a silent server costs one wait a TTL, not one a miss)."""
        with self._lock:
            now, known = self.clock(), self._records.get(kind, {})
            if now - self._checked.get(kind, -1e18) < self.ttl:
                return known
            began, until = self._missed.get(kind, (-1e18, 0.0))
            if now - began >= self.ttl:
                self._missed[kind] = (now, time.monotonic() + self._fetches.limit)
                until = self._missed[kind][1]
            generation = self._generations.get(kind, 0)
        left = until - time.monotonic()
        if left <= 0:
            return known
        try:
            return self._start_refresh(kind, generation).result(timeout=left)
        except TimeoutError:
            return known

    def _refresh(self, kind: str, generation: int) -> dict[str, Record]:
        try:
            listed = self.repo.records(kind)
            self.server_reachable = True
        except Exception as exc:  # offline: keep serving what we knew, retry after the TTL
            self.server_reachable = False
            with self._lock:
                known = self._records.get(kind)
            if known is None:
                known = self._load_records(kind)
            if known is None:
                raise
            log.warning("cannot refresh %s (%s); using the list from before", kind, exc)
            self._keep(kind, generation, known)
            return known
        records = self._sound_records(kind, listed)
        write_json(self._records_file(kind), [record_to_json(r) for r in records.values()])
        self._keep(kind, generation, records)
        return records

    def _keep(self, kind: str, generation: int, records: dict[str, Record]) -> None:
        with self._lock:
            if self._generations.get(kind, 0) == generation:
                self._records[kind], self._checked[kind] = records, self.clock()

    def invalidate(self, kind: str) -> None:
        """Wait for the server's list at the next look (staging just published a version of KIND)."""
        with self._lock:
            self._generations[kind] = self._generations.get(kind, 0) + 1
            self._records.pop(kind, None)
            self._checked.pop(kind, None)

    def _records_file(self, kind: str) -> Path:
        return self.state_dir / f"records-{kind}.json"

    def _load_records(self, kind: str) -> dict[str, Record] | None:
        try:
            stored = [record_from_json(r) for r in json.loads(self._records_file(kind).read_text())]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return self._sound_records(kind, stored)

    def kept_listing(self) -> bool:
        """Whether an earlier mount kept a record list on disk (what an offline mount serves)."""
        return any(self._load_records(kind) is not None for kind in KINDS)

    def record(self, kind: str, name: str) -> Record:
        record = self.records(kind).get(name) or self._after_a_miss(kind).get(name)
        if record is None:
            raise not_found(f"{kind}/{name}")
        return record

    # --- version trees -------------------------------------------------------------------

    def tree(self, record: Record, number: int) -> VersionTree:
        tree = self._known_tree(record, number)
        if tree is None:
            tree = self._fetches.result(("files", record.id, number),
                                        functools.partial(self._fetch_tree, record, number),
                                        f"the files of {record.kind}/{record.name} v{number}")
        return tree

    def _known_tree(self, record: Record, number: int) -> VersionTree | None:
        """The version's files from memory or from the list kept on disk; None if neither has them."""
        tree = self._trees.get((record.id, number))  # a dict lookup (see the note on locks)
        if tree is not None:
            return tree
        try:
            entries = [FileEntry(*row) for row in json.loads(self._listing_file(record, number).read_text())]
        except (OSError, ValueError, TypeError):
            return None
        return self._install(record, number, entries)

    def _fetch_tree(self, record: Record, number: int) -> VersionTree:
        entries = self.repo.files(record, number)
        write_json(self._listing_file(record, number),
                   [(e.path, e.file_version, e.checksum, e.size, e.created_at) for e in entries])
        return self._install(record, number, entries)

    def _install(self, record: Record, number: int, entries: list[FileEntry]) -> VersionTree:
        tree = VersionTree.build(self._sound_files(record, number, entries))
        mtime = self._published(record, number).created_at.timestamp()
        with self._lock:
            self._trees[(record.id, number)] = tree
            self._versions[(record.kind, record.name, f"v{number}")] = ListedVersion(mtime, tree)
        return tree

    def _list_later(self, record: Record, number: int) -> None:
        """The version's whole list a moment after its first lookup (at once, its 10,000 entries
        delayed the first open's next lookups)."""
        self._closing.wait(LIST_LATER_S)
        self.tree(record, number)

    def close(self, within: float = LIST_AT_CLOSE_S) -> None:
        """List now (within WITHIN s) the versions looked into, for an offline remount."""
        self._closing.set()
        deadline = time.monotonic() + within
        with self._lock:
            to_list = list(self._to_list) if self.list_later else []  # a script does not remount offline
        for record, number in to_list:
            future = self._fetches.start(("list later", record.id, number),
                                         functools.partial(self._list_later, record, number))
            with contextlib.suppress(Exception):
                future.result(timeout=max(0.0, deadline - time.monotonic()))

    def _listing_file(self, record: Record, number: int) -> Path:
        return self.state_dir / "listings" / record.kind / record.id / f"v{number}.rows.json"

    def _look_up(self, record: Record, number: int, rel: str) -> FileEntry | bool | None:
        """REL in a version whose list is not in hand, in one small request (the whole list follows; without
        `list_later`, a script's, it serves the lookups after WHOLE_LIST_AFTER): its entry if a file, True if
        a folder, False if neither; None when only the whole list can tell."""
        with self._lock:
            counts = self._to_list.get((record, number), (0, 0))
            if not self.list_later and any(n >= most for n, most in zip(counts, WHOLE_LIST_AFTER)):
                return None
        try:  # on this thread first: a hop to a fetch thread and back was a third of a lookup's time
            found = self.repo.lookup_at_once(record, number, rel)
            if found is None:
                found = self._fetches.result(("lookup", record.id, number, rel),
                                             functools.partial(self.repo.lookup, record, number, rel),
                                             f"{rel} in {record.kind}/{record.name} v{number}")
        except TimeoutError:
            raise  # a silent server: the whole list would wait as long again
        except Exception as exc:  # e.g. offline: the whole list's fetch says so, or finds it on disk
            log.debug("cannot look up %s alone: %s", rel, exc)
            return None
        sound = self._sound_files(record, number, found)
        if len(found) > 1 or any(e.path != rel and not e.path.startswith(rel + "/") for e in found):
            self._install(record, number, sound)  # a server that ignores the filter sent the whole list
            return None
        with self._lock:
            found_alone, missed = self._to_list.get((record, number), (0, 0))
            self._to_list[(record, number)] = (found_alone + bool(found), missed + (not found))
        if self.list_later:
            self._fetches.start(("list later", record.id, number), functools.partial(self._list_later, record, number))
        if not found:
            return False
        if len(sound) != len(found):
            return None  # left out by the rules: the whole list says what stands there
        return sound[0] if sound[0].path == rel else True

    # --- paths ---------------------------------------------------------------------------

    def resolve(self, path: str) -> Node:
        """The node at PATH ('/datasets/NAME/v1/a.tif'); FileNotFoundError when there is none."""
        node = self._nodes.get(path)
        if node is not None:
            if node is ABSENT:
                raise not_found(path)
            return node
        parts = [p for p in path.split("/") if p]
        if not parts:
            return Node(DIR, self.started)
        kind = parts[0]
        if kind not in KINDS:
            raise not_found(path)
        if len(parts) == 1:
            return Node(DIR, self.started)
        record = self.record(kind, parts[1])
        published = record.published
        if len(parts) == 2:
            return Node(DIR, published[-1].created_at.timestamp(), record=record)
        if parts[2] == LATEST:
            if len(parts) > 3:
                raise not_found(path)  # the kernel follows the link itself
            target = f"v{published[-1].number}"
            return Node(LINK, published[-1].created_at.timestamp(), len(target), record, target=target)
        version = self._version(record, parts[2])
        if version is None and _VERSION_DIR.match(parts[2]):  # perhaps published since the list was fetched
            version = self._version(self._after_a_miss(kind).get(record.name, record), parts[2])
        if version is None:
            raise not_found(path)
        mtime = version.created_at.timestamp()
        if len(parts) == 3:  # the version's folder: its file list is fetched when looked into
            return Node(DIR, mtime, record=record, version=version.number)
        rel = "/".join(parts[3:])
        tree = self._known_tree(record, version.number)
        found = self._look_up(record, version.number, rel) if tree is None else None
        if found is None:
            tree = self.tree(record, version.number)
            found = tree.files.get(rel) or rel in tree.children
        if found is True:
            node = Node(DIR, mtime, record=record, version=version.number)
        else:
            node = Node(FILE, found.mtime(mtime), found.size, record, version.number, found) if found else ABSENT
        with self._lock:
            if len(self._nodes) >= MAX_KEPT_NODES:
                self._nodes.clear()
            self._nodes[path] = node
        if node is ABSENT:
            raise not_found(path)
        return node

    def listed_file(self, path: str) -> tuple[FileEntry, float] | None:
        """PATH's entry and mtime when PATH is a file of a version whose file list is loaded;
        None for anything else, which `resolve` answers."""
        parts = path.split("/", 4)
        if len(parts) < 5:
            return None
        version = self._versions.get((parts[1], parts[2], parts[3]))
        if version is None:
            return None
        entry = version.tree.files.get(parts[4])
        return None if entry is None else (entry, entry.mtime(version.mtime))

    @staticmethod
    def _version(record: Record, name: str) -> Version | None:
        match = _VERSION_DIR.match(name)
        if not match:
            return None
        return Namespace._published(record, int(match.group(1)))

    @staticmethod
    def _published(record: Record, number: int) -> Version | None:
        return next((v for v in record.published if v.number == number), None)

    def listdir(self, path: str) -> list[str]:
        node = self.resolve(path)
        if node.type != DIR:
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        parts = [p for p in path.split("/") if p]
        if not parts:
            return list(KINDS)
        if len(parts) == 1:
            return sorted(self.records(parts[0]))
        if len(parts) == 2:
            return [f"v{v.number}" for v in node.record.published] + [LATEST]
        return list(self.tree(node.record, node.version).children.get("/".join(parts[3:]), []))
