"""Random sequences of versioning calls against the real server and a small reference model.

The model is the API page's file-versioning rules written as plainly as possible (zip batches,
multipart uploads, carries, drafts, publish, discard); after
every step the server's listings, record versions, sizes and downloads must match it.
Paths include 'd' and 'd/x' so file/folder clashes (409, nothing stored) come up too.
"""

from __future__ import annotations

import hashlib
import itertools

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition, rule,
                                 run_state_machine_as_test)
from serverapi import Api, sha1
from tests.conftest import FULL_MATRIX

PATHS = ["a", "b", "d", "d/x", "d/y"]
CONTENTS = [b"1", b"22", b"333"]
_records = itertools.count(1)


def _clashes(path: str, others: set[str]) -> bool:
    return any(o != path and (o.startswith(path + "/") or path.startswith(o + "/")) for o in others)


class VersioningModel(RuleBasedStateMachine):
    server = None  # set by the test before running

    @initialize()
    def create(self):
        self.api = Api(self.server, "datasets", self.server.token("modeler"))
        self.rid = self.api.create(f"model-{id(self) % 100000}-{next(_records)}")
        self.file_versions: dict[str, dict[int, bytes]] = {}  # path -> file version -> bytes
        self.versions: dict[int, dict] = {}                    # N -> {"draft": bool, "files": {path: fv}}
        self.next_version = 1

    def _latest(self, path: str) -> int | None:
        return max(self.file_versions.get(path, {}) or [0]) or None

    @rule(draft=st.booleans())
    def new_version(self, draft):
        assert self.api.new_version(self.rid, draft=draft) == self.next_version
        self.versions[self.next_version] = {"draft": draft, "files": {}}
        self.next_version += 1

    @precondition(lambda self: self.versions)
    @rule(data=st.data(), files=st.dictionaries(st.sampled_from(PATHS), st.sampled_from(CONTENTS), min_size=1,
                                                max_size=3))
    def ingest(self, data, files):
        version = data.draw(st.sampled_from(sorted(self.versions)))
        r = self.api.batch(self.rid, version, files)
        held = dict(self.versions[version]["files"])
        for path in files:
            if _clashes(path, set(held)):
                assert r.status_code == 409, r.text
                return
            held[path] = 0
        assert r.status_code == 200, r.text
        for path, content in files.items():
            latest = self._latest(path)
            if latest is not None and self.file_versions[path][latest] == content:
                fv = latest
            else:
                fv = (latest or 0) + 1
                self.file_versions.setdefault(path, {})[fv] = content
            self.versions[version]["files"][path] = fv

    @precondition(lambda self: self.versions)
    @rule(data=st.data(), path=st.sampled_from(PATHS), content=st.sampled_from(CONTENTS))
    def multipart(self, data, path, content):
        version = data.draw(st.sampled_from(sorted(self.versions)))
        r = self.api.post(f"datasets/{self.rid}/uploadId", json={"filname": path, "checksum": sha1(content)})
        latest = self._latest(path)
        if latest is not None and self.file_versions[path][latest] == content:
            assert (r.status_code, r.json()["detail"]) == (409, "File already exists")
            return
        upload_id = r.json()["upload_id"]
        r = self.api.post(f"datasets/chunk/{upload_id}", files={"file": ("part", content)},
                          data={"part_number": 1, "checksum": hashlib.md5(content).hexdigest()})
        assert r.status_code == 200, r.text
        r = self.api.post(f"datasets/complete/{upload_id}?version={version}")
        if _clashes(path, set(self.versions[version]["files"])):
            assert r.status_code == 409
            return
        assert r.status_code == 200, r.text
        fv = (latest or 0) + 1
        self.file_versions.setdefault(path, {})[fv] = content
        self.versions[version]["files"][path] = fv
        assert r.json()["file_version"] == fv

    @precondition(lambda self: self.versions)
    @rule(data=st.data(), path=st.sampled_from(PATHS), content=st.sampled_from(CONTENTS))
    def carry(self, data, path, content):
        version = data.draw(st.sampled_from(sorted(self.versions)))
        r = self.api.carry(self.rid, version, {path: sha1(content)})
        matches = [fv for fv, c in self.file_versions.get(path, {}).items() if c == content]
        if path not in self.file_versions:
            assert (r.status_code, r.json()["detail"]) == (404, "File doesn't exist")
        elif not matches:
            assert (r.status_code, r.json()["detail"]) == (400, "Checksum mismatch.")
        elif _clashes(path, set(self.versions[version]["files"])):
            assert r.status_code == 409
        else:
            assert r.status_code == 200, r.text
            self.versions[version]["files"][path] = max(matches)

    @precondition(lambda self: any(v["draft"] for v in self.versions.values()))
    @rule(data=st.data())
    def publish(self, data):
        version = data.draw(st.sampled_from(sorted(n for n, v in self.versions.items() if v["draft"])))
        assert self.api.post(f"datasets/{self.rid}/publish?version={version}").status_code == 200
        self.versions[version]["draft"] = False

    @precondition(lambda self: any(v["draft"] for v in self.versions.values()))
    @rule(data=st.data())
    def discard(self, data):
        version = data.draw(st.sampled_from(sorted(n for n, v in self.versions.items() if v["draft"])))
        assert self.api.req("DELETE", f"datasets/{self.rid}/version/{version}").status_code == 200
        del self.versions[version]
        used = {(p, fv) for v in self.versions.values() for p, fv in v["files"].items()}
        for path in list(self.file_versions):
            for fv in list(self.file_versions[path]):
                if (path, fv) not in used:
                    del self.file_versions[path][fv]
            if not self.file_versions[path]:
                del self.file_versions[path]
        self.next_version = max(self.versions, default=0) + 1  # the highest numbers are free again

    @invariant()
    def server_matches_model(self):
        if not hasattr(self, "rid"):
            return
        for n, v in self.versions.items():
            listing = {f["filename"]: (f["version"], f["checksum"], f["size"]) for f in self.api.files(self.rid, n)}
            want = {p: (fv, sha1(self.file_versions[p][fv]), len(self.file_versions[p][fv]))
                    for p, fv in v["files"].items()}
            assert listing == want, (n, listing, want)
        everything = sorted((f["filename"], f["version"]) for f in self.api.files(self.rid))
        assert everything == sorted((p, fv) for p, fvs in self.file_versions.items() for fv in fvs)
        record = next(r for r in self.api.get("datasets?match=model-").json() if r["id"] == self.rid)
        published = [(x["version_id"], x["size"]) for x in record["versions"]]
        drafts = [(x["version_id"], x["size"]) for x in record["drafts"]]

        def size(v):
            return sum(len(self.file_versions[p][fv]) for p, fv in v["files"].items())
        assert published == [(n, size(v)) for n, v in sorted(self.versions.items()) if not v["draft"]]
        assert drafts == [(n, size(v)) for n, v in sorted(self.versions.items()) if v["draft"]]
        for path in self.file_versions:
            latest = self._latest(path)
            assert self.api.download(self.rid, path).content == self.file_versions[path][latest]


def test_versioning_matches_the_model(repo_server):
    VersioningModel.server = repo_server
    run_state_machine_as_test(VersioningModel, settings=settings(
        max_examples=50 if FULL_MATRIX else 12, stateful_step_count=10, deadline=None, database=None,
        suppress_health_check=list(HealthCheck)))
