"""Settings precedence: argument > environment > config file > the official client's creds.json."""

from __future__ import annotations

import json

import jwt
import pytest

from eotdlfs.client import settings
from eotdlfs.client.settings import read_token_file, resolve_settings


def _token(sub: str) -> str:
    return jwt.encode({"sub": sub}, "a-test-secret-of-at-least-32-bytes!", algorithm="HS256")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty HOME and config dir, and none of the EOTDL variables."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for var in ("EOTDL_API_URL", "EOTDL_TOKEN", "EOTDL_API_KEY", "EOTDLFS_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _write_config(home, text: str) -> None:
    path = home / "config" / "eotdlfs" / "config.yml"
    path.parent.mkdir(parents=True)
    path.write_text(text)


def _write_creds(home, token: str) -> None:
    path = home / ".cache" / "eotdl" / "creds.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"id_token": token}))


def test_nothing_configured_means_embedded_and_anonymous(home):
    s = resolve_settings()
    assert (s.api_url, s.token, s.api_key, s.user_id) == (None, None, None, None)


def test_official_creds_are_the_last_resort(home):
    _write_creds(home, _token("alice"))
    s = resolve_settings()
    assert s.user_id == "alice"


def test_config_file_beats_creds_json(home):
    _write_creds(home, _token("alice"))
    _write_config(home, f"api_url: http://example.org/api\ntoken: {_token('bob')}\ntimeout: 7\n")
    s = resolve_settings()
    assert s.api_url == "http://example.org/api/"
    assert s.user_id == "bob"
    assert s.timeout == 7.0


def test_environment_beats_config_and_a_key_alone_counts(home, monkeypatch):
    _write_config(home, f"api_url: http://config/\ntoken: {_token('bob')}\n")
    monkeypatch.setenv("EOTDL_API_URL", "http://env:1")
    monkeypatch.setenv("EOTDL_API_KEY", "key-1")
    s = resolve_settings()
    assert s.api_url == "http://env:1/"
    assert (s.token, s.api_key) == (None, "key-1")


def test_arguments_beat_everything(home, monkeypatch):
    monkeypatch.setenv("EOTDL_API_URL", "http://env:1")
    monkeypatch.setenv("EOTDL_TOKEN", _token("env"))
    s = resolve_settings(api_url="http://arg:2/", token=_token("arg"))
    assert s.api_url == "http://arg:2/"
    assert s.user_id == "arg"
    assert s.api_key is None


def test_a_token_that_is_not_a_jwt_has_no_user(home):
    assert resolve_settings(token="not-a-jwt").user_id is None


@pytest.mark.parametrize("mode, warned", [(0o644, True), (0o640, True), (0o600, False)])
def test_a_token_other_users_can_read_is_warned_about_once(home, monkeypatch, capsys, mode, warned):
    """A config or token file written with the usual umask (0644) let every local user read the token
    and publish as its owner, and nothing said so (the README only asks to `chmod 600` it)."""
    monkeypatch.setattr(settings, "_warned", set(), raising=False)  # a fresh process
    _write_config(home, f"token: {_token('bob')}\n")
    token_file = home / "token"
    token_file.write_text(_token("carol") + "\n")
    for path in (home / "config" / "eotdlfs" / "config.yml", token_file):
        path.chmod(mode)
    for _ in range(2):
        assert resolve_settings().user_id == "bob"
        assert read_token_file(str(token_file)) == _token("carol")
    lines = capsys.readouterr().err.splitlines()
    if warned:
        assert lines == [f"warning: {home}/config/eotdlfs/config.yml holds a token and other users can read it "
                         f"(mode {mode:o}): chmod 600 {home}/config/eotdlfs/config.yml",
                         f"warning: {token_file} holds a token and other users can read it (mode {mode:o}): "
                         f"chmod 600 {token_file}"]
    else:
        assert lines == []
