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

End to end (`eotdlfs serve` as a process, as deployed; skipped with `--no-end-to-end`):
- `ingest_s`: `eotdlfs ingest` of the catalog (items + assets + metadata.yml);
- `reingest_1changed_s`: the same with one asset changed (goal < 5 s, one upload);
- `pystac_walk_mount_s`: pystac walks `latest/catalog.json` on a fresh mount (empty cache)
  and stats every asset (goal <= 3x `pystac_walk_local_s`);
- `stac_search_s`: `eotdlfs stac search --bbox --datetime` through the API, in process
  (goal < 1 s); `stac_search_cli_s` the same as a command, Python start included.

`--walks N` walks N times on each side, a fresh mount and the local folder alternated (the
machine is shared: one walk of each can land in a busy moment), and reports medians, each
walk's seconds in `walks_mount_s` / `walks_local_s`, and the mount's `contents` requests and
route 9 downloads during its last walk.

Usage: python scripts/bench_stac.py [--items 10000] [--no-end-to-end] [--walks N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import pystac
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eotdlfs.stac import (StoredSource, documents_to_feature_collection,  # noqa: E402
                          feature_collection_to_documents, read_local_catalog)
from eotdlfs.stac.search import ItemIndex, parse_bbox, parse_interval  # noqa: E402
from tests.stac.catalogs import write_catalog  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import ServerProcess, write_metadata  # noqa: E402

BBOX, DATETIME = "-10,35,30,60", "2020-01-01T00:00:00Z/2020-06-30T00:00:00Z"
NAME = "bench-stac"


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
    parser.add_argument("--no-end-to-end", action="store_true", help="only the library measures")
    parser.add_argument("--walks", type=int, default=1, help="walks on each side, alternated (medians)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-stac-"))
    os.environ["EOTDLFS_CACHE_DIR"] = str(work / "hash-cache")
    try:
        source = write_catalog(work / "src", items=args.items, name=NAME)
        files, read_local_s = timed(lambda: read_local_catalog(source))
        query = parse_bbox(BBOX), parse_interval(DATETIME)
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
        report = {"items": args.items, "matches": len(hits), "walked": walked,
                  "read_local_s": read_local_s, "search_s": search_s,
                  "search_kept_index_s": kept_s, "index_bytes": len(kept), "pystac_walk_local_s": walk_s,
                  "put_to_documents_s": put_s, "documents_to_get_s": get_s}
        if not args.no_end_to_end:
            report.update(end_to_end(work, source, len(hits), walked, lambda: timed(lambda: pystac_walk(version))[1],
                                     args.walks))
            report["pystac_walk_local_s"] = statistics.median([walk_s, *report["walks_local_s"]])
            report["goals"] = {"reingest_1changed_s": 5.0, "reingest_uploaded": 1,
                               "pystac_walk_mount_vs_local": 3.0, "stac_search_s": 1.0}
            report["pystac_walk_mount_vs_local"] = round(report["pystac_walk_mount_s"] / report["pystac_walk_local_s"], 2)
        print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def end_to_end(work: Path, source: Path, matches: int, items: int, local_walk: Callable[[], float],
               walks: int) -> dict:
    """Ingest, re-ingest, a mount's pystac walk and `stac search` against `eotdlfs serve`."""
    from eotdlfs.app.stac import search_lines
    from eotdlfs.client.api import ApiClient
    from eotdlfs.client.ingest import ingest_folder
    from eotdlfs.client.settings import Settings
    from eotdlfs.server.auth import issue_token

    write_metadata(source, NAME)
    server = ServerProcess(work / "root")
    try:
        token = issue_token(work / "root", "bench")
        api = ApiClient(Settings(api_url=server.url, token=token, api_key=None, timeout=300))
        _, ingest_s = timed(lambda: ingest_folder(api, "datasets", source))
        (source / "scenes" / "items" / "item-00007" / "data.tif").write_bytes(b"changed")
        again, reingest_s = timed(lambda: ingest_folder(api, "datasets", source))
        search = ["--bbox", BBOX, "--datetime", DATETIME]
        lines, search_s = timed(lambda: search_lines(NAME, None, BBOX, DATETIME, False, None, "datasets",
                                                     server.url, token))
        assert len(lines) == matches, (len(lines), matches)
        env = {**os.environ, "EOTDL_API_URL": server.url, "EOTDL_TOKEN": token}
        cli, cli_s = timed(lambda: subprocess.run([sys.executable, "-m", "eotdlfs", "stac", "search", NAME, *search],
                                                  env=env, capture_output=True, text=True, check=True))
        assert len(cli.stdout.splitlines()) == matches
        mount_walks, local_walks = [], []
        for round_ in range(walks):
            before = requests.get(server.url + "eotdlfs/stats", timeout=30).json()
            walked, mount_s = walk_on_a_fresh_mount(work / f"walk-{round_}", server.url, token)
            after = requests.get(server.url + "eotdlfs/stats", timeout=30).json()
            assert walked == items
            mount_walks.append(mount_s)
            if walks > 1:
                local_walks.append(local_walk())
    finally:
        server.stop()
    return {"ingest_s": ingest_s, "reingest_1changed_s": reingest_s, "reingest_uploaded": again.uploaded,
            "reingest_carried": again.carried, "stac_search_s": search_s, "stac_search_cli_s": cli_s,
            "pystac_walk_mount_s": statistics.median(mount_walks), "walks_mount_s": mount_walks,
            "walks_local_s": local_walks, "walk_contents_requests": after["contents"]["requests"]
            - before["contents"]["requests"], "walk_downloads": after["downloads"] - before["downloads"]}


def walk_on_a_fresh_mount(work: Path, api_url: str, token: str) -> tuple[int, float]:
    """pystac_walk of the latest version on a new mount with an empty cache: (items, seconds; mounting not timed)."""
    from eotdlfs.fs.mount import fusermount, is_mounted, stop_process, wait_for_exit

    mountpoint = Path(tempfile.mkdtemp(prefix="bench-stac-mnt-", dir="/tmp"))
    proc = subprocess.Popen([sys.executable, "-m", "eotdlfs", "mount", str(mountpoint), "--foreground",
                             "--api-url", api_url, "--cache-dir", str(work / "mount-cache")],
                            env={**os.environ, "EOTDL_TOKEN": token}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not is_mounted(mountpoint):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the mount did not come up within 30 s")
            time.sleep(0.05)
        start = time.perf_counter()
        walked = pystac_walk(mountpoint / "datasets" / NAME / "latest")
        return walked, round(time.perf_counter() - start, 3)
    finally:
        if is_mounted(mountpoint):
            fusermount(mountpoint)
        if not wait_for_exit(proc.pid, 10):
            stop_process(proc.pid)
        os.rmdir(mountpoint)


if __name__ == "__main__":
    main()
