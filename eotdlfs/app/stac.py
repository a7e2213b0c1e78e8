"""`eotdlfs stac search`: the items of a STAC version within a bbox and a time interval, from its catalog alone.

The version's item index (`.stac-index.json`, written by `eotdlfs ingest` and flushes) is
one small file, so a search reads one file, not every item document; a version without it
(ingested by the official client, say) is indexed from its documents, walked as on a mount.
Through a mount (`--mount MNT`) the files are read there, lazily and cached, and the
answer is paths on it; otherwise through the API, and the paths are `datasets/NAME/vN/...`,
where a mount shows them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from eotdlfs.app.connection import connect
from eotdlfs.fs.namespace import LATEST
from eotdlfs.metadata import record_noun
from eotdlfs.stac import StoredSource
from eotdlfs.stac.search import INDEX_FILE, Bbox, Interval, ItemIndex, parse_bbox, parse_interval


def search_lines(name: str, version: int | None, bbox: str | None, interval: str | None, as_json: bool,
                 mount: Path | None, kind: str, api_url: str | None, token: str | None) -> list[str]:
    """The lines `eotdlfs stac search` prints: one path per matching item, or with AS_JSON one
    FeatureCollection of the matching items (their documents as published, hrefs relative)."""
    box = parse_bbox(bbox) if bbox else None
    span = parse_interval(interval) if interval else None  # both checked before any file is read
    if mount is not None:
        folder = mounted_version(Path(mount), kind, name, version)
        if not (folder / "catalog.json").is_file():
            raise FileNotFoundError(f"{folder}/catalog.json: not a STAC version on this mount")
        return _answer(lambda path: (folder / path).read_bytes(), (folder / INDEX_FILE).exists(),
                       str(folder), box, span, as_json)
    from eotdlfs.client.download import VersionFiles  # the HTTP stack only when no mount is given

    with connect(api_url, token) as repo:
        files = VersionFiles(repo.api, kind, name, version)
        return _answer(files.read, INDEX_FILE in files.entries, f"{kind}/{name}/v{files.version}", box, span, as_json)


def mounted_version(mount: Path, kind: str, name: str, version: int | None) -> Path:
    """MOUNT/KIND/NAME/vN of VERSION, or of the version `latest` links to now: paths through
    `latest` would name another version once a newer one is published. FileNotFoundError
    naming the versions there are when VERSION is not one of them."""
    record = mount / kind / name
    try:
        numbers = sorted(int(entry[1:]) for entry in os.listdir(record) if re.fullmatch(r"v[0-9]+", entry))
    except FileNotFoundError:
        raise FileNotFoundError(f"{record_noun(kind)} {name!r} doesn't exist on this mount ({record})") from None
    if version is None:
        return record / os.readlink(record / LATEST)
    if version not in numbers:
        raise FileNotFoundError(f"{record_noun(kind)} version doesn't exist: {name} has versions "
                                f"{', '.join(map(str, numbers))}")
    return record / f"v{version}"


def _answer(read: Callable[[str], bytes], has_index: bool, prefix: str, box: Bbox | None, span: Interval | None,
            as_json: bool) -> list[str]:
    index = ItemIndex.from_bytes(read(INDEX_FILE)) if has_index else ItemIndex.from_source(StoredSource(read))
    found = index.search(box, span)
    if as_json:
        items = [json.loads(read(path)) for path in found]
        return [json.dumps({"type": "FeatureCollection", "features": items})]
    return [f"{prefix}/{path}" for path in found]
