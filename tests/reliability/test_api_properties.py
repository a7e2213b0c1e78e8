"""Property-based API tests: schemathesis drives every route of the OpenAPI schema with generated input.

Zero 5xx is the property. Half of the generated record ids are swapped for a real record's
id and most requests carry a valid token, so the generated input reaches the store's
rules, not only the "doesn't exist" and "not authenticated" answers.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from eotdlfs.server.app import create_app
from reliability.conftest import assert_fsck_ok

EXAMPLES_PER_ROUTE = 20


def _openapi_of_create_app() -> dict:
    """The schema FastAPI derives from `create_app` (built on a throw-away root; no server needed)."""
    with tempfile.TemporaryDirectory(prefix="eotdlfs-openapi-") as root:
        return create_app(Path(root)).openapi()


schema = schemathesis.openapi.from_dict(_openapi_of_create_app())


@pytest.fixture(scope="module")
def seeded(module_server) -> dict[str, str]:
    """A dataset and a model, each with one published version holding 'a.txt'."""
    token = module_server.token("alice")
    auth = {"Authorization": f"Bearer {token}"}
    ids = {}
    for kind in ("datasets", "models"):
        body = {"name": f"fuzz-{kind}", "authors": ["a"], "license": "MIT", "source": "http://example.com"}
        rid = requests.post(module_server.url + kind, json=body, headers=auth, timeout=10).json()[f"{kind[:-1]}_id"]
        requests.post(f"{module_server.url}{kind}/version/{rid}", headers=auth, timeout=10).raise_for_status()
        requests.post(f"{module_server.url}{kind}/{rid}?version=1", headers=auth, timeout=10,
                      files={"file": ("a.txt", b"alpha")},
                      data={"checksum": hashlib.sha1(b"alpha").hexdigest()}).raise_for_status()
        ids[kind] = rid
    return {"token": token, **ids}


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_ROUTE, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_error_on_any_generated_request(case, module_server, seeded, tally) -> None:
    kind = "models" if case.path.startswith("/models") else "datasets"
    record_id = case.path_parameters.get("record_id") if case.path_parameters else None
    if isinstance(record_id, str) and len(record_id) % 2 == 0:
        case.path_parameters["record_id"] = seeded[kind]
    headers = {}
    if not (case.headers or {}).get("authorization") and not (case.headers or {}).get("x-api-key"):
        headers["Authorization"] = f"Bearer {seeded['token']}"
    response = case.call(base_url=module_server.url.rstrip("/"), headers=headers, timeout=30)
    tally.bad_inputs_tried += 1
    if response.status_code >= 500:
        tally.server_errors_seen += 1
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"


def test_repository_intact_after_fuzzing(module_server) -> None:
    assert_fsck_ok(module_server.root)
