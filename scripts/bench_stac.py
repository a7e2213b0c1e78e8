"""Benchmark of the STAC (Q1+) modules on a generated catalog; prints JSON.

- `read_local_s`: read_local_catalog of the folder (what `eotdlfs ingest` does before hashing).
- `search_s`: `stac search` from nothing: walk the catalog from disk, index it, one bbox +
  datetime query; goal < 1 s for 10,000 items.
- `search_kept_index_s`: the same query from the index kept as one document
  (`ItemIndex.to_bytes`, `index_bytes` long): load it and query.
- `pystac_walk_local_s`: pystac walks the self-contained version on local disk and resolves
  every asset href: the baseline of the mount's goal (<= 3x this).
- `put_to_documents_s` / `documents_to_get_s`: the server's side of the official client's
  `PUT datasets/stac/ID` and `GET datasets/ID/download` for the same catalog.

Usage: python scripts/bench_stac.py [--items 10000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pystac

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eotdlfs.stac import (StoredSource, documents_to_feature_collection,  # noqa: E402
                          feature_collection_to_documents, read_local_catalog)
from eotdlfs.stac.search import ItemIndex, parse_bbox, parse_interval  # noqa: E402
from tests.stac.catalogs import write_catalog  # noqa: E402


def timed(work):
    start = time.perf_counter()
    result = work()
    return result, round(time.perf_counter() - start, 3)


def pystac_walk(root: Path) -> int:
    catalog = pystac.Catalog.from_file(str(root / "catalog.json"))
    count = 0
    for item in catalog.get_items(recursive=True):
        for asset in item.assets.values():
            assert Path(asset.get_absolute_href()).is_file()
        count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-stac-"))
    try:
        source = write_catalog(work / "src", items=args.items)
        files, read_local_s = timed(lambda: read_local_catalog(source))
        query = parse_bbox("-10,35,30,60"), parse_interval("2020-01-01T00:00:00Z/2020-06-30T00:00:00Z")
        hits, search_s = timed(lambda: ItemIndex.from_folder(source).search(*query))
        kept = ItemIndex.from_folder(source).to_bytes()
        kept_hits, kept_s = timed(lambda: ItemIndex.from_bytes(kept).search(*query))
        assert kept_hits == hits
        version = work / "version"
        for path, data in files.documents:
            (version / path).parent.mkdir(parents=True, exist_ok=True)
            (version / path).write_bytes(data)
        for path in files.assets:
            (version / path).write_bytes(b"")
        walked, walk_s = timed(lambda: pystac_walk(version))
        stored = dict(files.documents)
        url = "http://127.0.0.1:8000/datasets/ID/download/{}".format
        fc, get_s = timed(lambda: documents_to_feature_collection(StoredSource(stored.__getitem__), url))
        wire = json.loads(json.dumps(fc))
        _, put_s = timed(lambda: feature_collection_to_documents(wire, "ID", set(files.assets)))
        print(json.dumps({"items": args.items, "matches": len(hits), "walked": walked,
                          "read_local_s": read_local_s, "search_s": search_s,
                          "search_kept_index_s": kept_s, "index_bytes": len(kept), "pystac_walk_local_s": walk_s,
                          "put_to_documents_s": put_s, "documents_to_get_s": get_s}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
