"""What a mounted filesystem is made of, built once per mount and shared with the staging overlay."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from eotdlfs.fs.block_cache import BlockCache
from eotdlfs.fs.fetcher import BlockFetcher
from eotdlfs.fs.kept_lists import drop_unkeyed_lists, kept_lists_dir
from eotdlfs.fs.namespace import Namespace
from eotdlfs.fs.pieces import STORE_AT_BYTES
from eotdlfs.fs.prefetch import SmallFilePrefetch
from eotdlfs.fs.reader import ContentReader
from eotdlfs.fs.readonly import ReadOnlyTree
from eotdlfs.repository import Repository


@dataclass
class MountOptions:
    cache_dir: Path
    cache_size: int = 20 << 30
    ttl: float = 10.0
    block_size: int = 1 << 20
    fetch_workers: int = 4
    request_blocks: int = 8
    autoflush: float | None = None
    read_timeout: float = 65.0  # a callback waiting for the server gets EIO after this long
    api_url: str = ""
    # What the lists kept on disk belong to: the API URL, or for the embedded repository its folder
    # (its URL's port changes at each start); "" is the API URL.
    repository: str = ""
    list_later: bool = True  # a version's whole list in the background after its first lookup (Namespace)
    store_pieces_at: int = STORE_AT_BYTES  # a seeking reader's pieces waiting to be stored, at most (`pieces`)


@dataclass
class MountContext:
    """The live objects of one mount. The staging overlay reads published files through
    `tree`/`reader` (same cache) and keeps its own state under `options.cache_dir`."""

    repo: Repository
    options: MountOptions
    cache: BlockCache
    fetcher: BlockFetcher
    namespace: Namespace
    reader: ContentReader
    tree: ReadOnlyTree
    prefetch: SmallFilePrefetch
    warming: list[Future] = field(default_factory=list)  # the record lists fetched as it starts (`Namespace.warm`)

    def close(self) -> None:
        self.prefetch.close()
        self.namespace.close()
        self.reader.close()
        self.fetcher.close()
        self.cache.close()


def build_context(repo: Repository, options: MountOptions) -> MountContext:
    cache_dir = Path(options.cache_dir)
    cache = BlockCache(cache_dir / "blocks", options.cache_size, options.block_size)
    fetcher = BlockFetcher(repo, cache, workers=options.fetch_workers,
                           request_blocks=options.request_blocks)
    drop_unkeyed_lists(cache_dir)
    lists = kept_lists_dir(cache_dir, options.repository or options.api_url)
    namespace = Namespace(repo, lists, ttl=options.ttl, wait=options.read_timeout, list_later=options.list_later)
    warming = namespace.warm()
    reader = ContentReader(fetcher, demand_timeout=options.read_timeout, store_pieces_at=options.store_pieces_at)
    tree = ReadOnlyTree(namespace, reader)
    # Two walks' files fetched ahead fill at most a quarter of a small cache: not evicted before they are read.
    prefetch = SmallFilePrefetch(repo, namespace, fetcher, ahead_bytes=min(32 << 20, options.cache_size // 8),
                                 wait=min(10.0, options.read_timeout), silent=reader.server_silent)
    tree.on_open = prefetch.opened
    return MountContext(repo, options, cache, fetcher, namespace, reader, tree, prefetch, warming)
