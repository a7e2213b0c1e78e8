"""Fixtures of the server tests: `kind` (both kinds) and `api` (the session server as 'alice')."""

from __future__ import annotations

import pytest
from serverapi import Api


@pytest.fixture(params=["datasets", "models"])
def kind(request) -> str:
    return request.param


@pytest.fixture
def api(repo_server, kind) -> Api:
    """The session server, for KIND, as user 'alice'."""
    return Api(repo_server, kind, repo_server.token("alice"))
