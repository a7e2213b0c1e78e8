"""Where the repository is and who we are: API URL and credentials, resolved from every source in order.

API URL: the argument (`--api-url`), `EOTDL_API_URL`, the config file
(`user_config_dir("eotdlfs")/config.yml`, keys `api_url`, `token`, `api_key`, `timeout`),
else None, meaning "use the embedded local repository".
Credentials: the argument (`--token`, or `--token-file`, read by `read_token_file`),
`EOTDL_TOKEN` / `EOTDL_API_KEY`, the config file, then the official client's
`~/.cache/eotdl/creds.json` (`id_token`). `--token T` shows T to every local user in `ps`;
the other sources do not. The first source that
gives any credential wins, so a token in the environment is never mixed with a key from a file.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Settings:
    api_url: str | None
    token: str | None
    api_key: str | None
    timeout: float = DEFAULT_TIMEOUT

    @property
    def user_id(self) -> str | None:
        """The token's `sub` claim (decoded without verifying, as the official client does); None without a token."""
        return token_subject(self.token) if self.token else None


def token_subject(token: str) -> str | None:
    # Imported here: PyJWT brings in `cryptography`, a tenth of a second of every eotdl:// reader's
    # start and 20 MB of every mount's memory.
    import jwt

    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    sub = claims.get("sub")
    return str(sub) if sub is not None else None


def config_path() -> Path:
    return Path(platformdirs.user_config_dir("eotdlfs")) / "config.yml"


def official_creds_path() -> Path:
    return Path.home() / ".cache" / "eotdl" / "creds.json"


_warned: set[str] = set()  # credential files already warned about: a process resolves its settings more than once


def _warn_if_others_can_read(path: Path, what: str) -> None:
    """A `warning:` line on stderr when PATH, holding WHAT, is readable by other local users: any of them
    could publish as you with it (a config made with the usual umask 022 is 0644). Not refused, as ssh
    refuses such a key: a warning keeps the user's scripts working while it says how to close it."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return
    if mode & 0o044 and str(path) not in _warned:
        _warned.add(str(path))
        print(f"warning: {path} holds {what} and other users can read it (mode {mode:o}): chmod 600 {path}",
              file=sys.stderr)


def _read_config() -> dict[str, Any]:
    try:
        text = config_path().read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ValueError(f"cannot read {config_path()}: {exc}") from exc
    import yaml  # only with a config file: ~9 ms of the start of every eotdl:// script without one

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"cannot read {config_path()}: {exc}") from exc
    if not isinstance(data, dict):
        return {}
    if data.get("token") or data.get("api_key"):
        _warn_if_others_can_read(config_path(), "a token" if data.get("token") else "an API key")
    return data


def _read_official_token() -> str | None:
    try:
        data = json.loads(official_creds_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    token = data.get("id_token") if isinstance(data, dict) else None
    return token if isinstance(token, str) and token else None


def read_token_file(path: str) -> str:
    """The token in the file PATH ('-': standard input), surrounding whitespace and newlines stripped."""
    shown = "(standard input)" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the token file {shown}: {getattr(exc, 'strerror', None) or exc}") from exc
    words = text.split()
    if len(words) != 1:
        raise ValueError(f"the token file {shown} must hold the token alone, "
                         f"found {f'{len(words)} words' if words else 'nothing'}")
    if path != "-":
        _warn_if_others_can_read(Path(path), "a token")
    return words[0]


def given_token(token: str | None, token_file: str | None) -> str | None:
    """The token given on the command line, as `--token` or `--token-file`; None when neither."""
    if token is not None and token_file is not None:
        raise ValueError("give --token or --token-file, not both")
    return read_token_file(token_file) if token_file is not None else token


def normalize_url(url: str) -> str:
    """The API base URL with exactly one trailing slash (route paths are appended to it).

    ValueError unless it is an http(s) URL with a host: 'host:port' without a scheme is the usual
    slip, and requests would only say 'No connection adapters were found'."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise ValueError(f"API URL {url!r}: an http:// or https:// URL expected (e.g. http://127.0.0.1:8000/)")
    return url.rstrip("/") + "/"


def resolve_settings(api_url: str | None = None, token: str | None = None) -> Settings:
    """Settings from arguments, environment, config file and the official client's credentials, in that order."""
    config = _read_config()
    url = api_url or os.environ.get("EOTDL_API_URL") or config.get("api_url") or None
    credential_sources = (
        (token, None),
        (os.environ.get("EOTDL_TOKEN"), os.environ.get("EOTDL_API_KEY")),
        (config.get("token"), config.get("api_key")),
        (_read_official_token(), None),
    )
    found_token, found_key = next(
        ((t or None, k or None) for t, k in credential_sources if t or k), (None, None)
    )
    timeout = float(os.environ.get("EOTDLFS_TIMEOUT") or config.get("timeout") or DEFAULT_TIMEOUT)
    return Settings(
        api_url=normalize_url(url) if url else None,
        token=found_token,
        api_key=found_key,
        timeout=timeout,
    )
