"""Benchmark of the server's STAC routes with a catalog of the official client's shape; prints JSON.

Starts `eotdlfs serve` on a temp root, puts the assets of an N-item catalog into a version
(zip batches: the official client's one-request-per-asset upload is route 8's cost, not
STAC's), then measures
- `put_s`: `PUT datasets/stac/ID` of the FeatureCollection (`put_body_bytes` long), i.e.
  validation, the documents written as N + 2 checksummed files, one transaction;
- `download_s`: `GET datasets/ID/download` (the official `get`'s S5): walk of the stored
  documents and the FeatureCollection answer;
- `server_max_rss_mib`: the server process's peak memory.

Usage: python scripts/bench_stac_server.py [--items 10000]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time
import zipfile
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eotdlfs.server.auth import issue_token  # noqa: E402
from eotdlfs.stac import StoredSource, documents_to_feature_collection, read_local_catalog  # noqa: E402
from scripts.bench_server import ok, served  # noqa: E402
from tests.stac.catalogs import write_catalog  # noqa: E402

BATCH = 990  # checksums are form fields: at most 1000 a request


def official_body(folder: Path, url: str, rid: str) -> tuple[bytes, dict[str, bytes]]:
    """The PUT body the official client sends for FOLDER, and its assets by upload name (base name)."""
    files = read_local_catalog(folder)
    stored = dict(files.documents)
    fc = documents_to_feature_collection(StoredSource(stored.__getitem__),
                                         lambda path: f"{url}datasets/{rid}/download/{path.rsplit('/', 1)[-1]}")
    assets = {path.rsplit("/", 1)[-1]: (folder / path).read_bytes() for path in files.assets}
    return json.dumps({"stac": fc}).encode(), assets


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def run(url: str, token: str, work: Path, items: int) -> dict:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    rid = ok(s.post(url + "datasets/stac", json={"name": "stac-test"})).json()["dataset_id"]
    version = ok(s.post(url + f"datasets/version/{rid}")).json()["version"]
    body, assets = official_body(write_catalog(work / "src", items=items, asset="{id}.tif"), url, rid)
    names = sorted(assets)
    for k in range(0, len(names), BATCH):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for name in names[k:k + BATCH]:
                zf.writestr(name, assets[name])
        ok(s.post(url + f"datasets/{rid}/batch?version={version}", files={"batch": ("b.zip", buf.getvalue())},
                  data={"checksums": [hashlib.sha1(assets[n]).hexdigest() for n in names[k:k + BATCH]]}))
    start = time.perf_counter()
    ok(s.put(url + f"datasets/stac/{rid}", data=body, headers={"Content-Type": "application/json"}))
    put_s = time.perf_counter() - start
    start = time.perf_counter()
    features = ok(s.get(url + f"datasets/{rid}/download")).json()["features"]
    download_s = time.perf_counter() - start
    assert len(features) == items + 2, len(features)
    return {"items": items, "put_body_bytes": len(body), "put_s": round(put_s, 2), "download_s": round(download_s, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    args = parser.parse_args()
    with served() as (proc, url, work):
        result = run(url, issue_token(work / "root", "bench"), work, args.items)
        result["server_max_rss_mib"] = peak_rss_mib(proc.pid)
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
