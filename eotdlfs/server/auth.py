"""Who is calling: HS256 JWTs signed with the repository's secret, and API keys.

The secret lives in ROOT/secret (created 0600 on first use), or, with a database given by
`--db`, in that database, so that every replica on it signs and accepts the same tokens. Tokens carry `sub` (the
user id the official client reads without verifying), `iat` and `exp`. API keys are
stored only as SHA-256 hashes in the database.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import jwt

from eotdlfs.server.db import Database

SECRET_FILE = "secret"
ALGORITHM = "HS256"
TOKEN_LIFETIME_S = 30 * 24 * 3600

Reader = Callable[[], "str | None"]  # who is reading (None: nobody known); asked only when a draft is at stake


def nobody() -> None:
    """The reader of a request without valid credentials."""
    return None


class AuthError(Exception):
    """The request carries no credentials, or credentials we do not accept."""


def load_secret(root: Path | None, db: Database | None = None) -> bytes:
    """The signing secret: a row of DB when it is shared (`--db`), else ROOT/secret (mode 0600); made the first time."""
    if db is not None and db.shared:
        return db.setting_or_default("secret", secrets.token_hex(32)).encode()
    assert root is not None, "a repository without --db needs its --root"
    path = Path(root) / SECRET_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    Path(root).mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return path.read_bytes()
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
        f.flush()
        os.fsync(f.fileno())
    return secret


def issue_token(root: Path | None, user: str, lifetime_s: int = TOKEN_LIFETIME_S, db_url: str | None = None) -> str:
    """A JWT for USER signed with the secret of ROOT, or of the database DB_URL (`--db`)."""
    now = int(time.time())
    claims = {"sub": user, "iat": now, "exp": now + lifetime_s}
    if db_url is None:
        return jwt.encode(claims, load_secret(root), algorithm=ALGORITHM)
    db = Database(root, db_url)
    try:
        return jwt.encode(claims, load_secret(root, db), algorithm=ALGORITHM)
    finally:
        db.close()


def verify_token(secret: bytes, token: str) -> str:
    """The user id of a valid TOKEN; AuthError otherwise."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]})
    except jwt.ExpiredSignatureError:
        raise AuthError("Token expired") from None
    except jwt.InvalidTokenError:
        raise AuthError("Invalid token") from None
    sub = claims["sub"]
    if not isinstance(sub, str) or not sub:
        raise AuthError("Invalid token")
    return sub


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(root: Path | None, user: str, db_url: str | None = None) -> str:
    """A new API key for USER in the database of ROOT, or DB_URL (`--db`); only its hash is stored."""
    db = Database(root, db_url)
    key = "eotdlfs_" + secrets.token_urlsafe(32)
    now = datetime.now(timezone.utc).isoformat()
    try:
        with db.write() as conn:
            conn.execute("INSERT INTO api_keys (key_hash, uid, created_at) VALUES (?, ?, ?)",
                         (_key_hash(key), user, now))
    finally:
        db.close()
    return key


def verify_api_key(db: Database, key: str) -> str:
    """The user id owning KEY; AuthError otherwise."""
    with db.read() as conn:
        row = conn.execute("SELECT uid FROM api_keys WHERE key_hash = ?", (_key_hash(key),)).fetchone()
    if row is None:
        raise AuthError("Invalid API key")
    return row["uid"]


def authenticate(db: Database, secret: bytes, authorization: str | None, api_key: str | None) -> str:
    """The user behind a request's `Authorization: Bearer` or `X-API-Key` header."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("Invalid authorization header")
        return verify_token(secret, token.strip())
    if api_key:
        return verify_api_key(db, api_key)
    raise AuthError("Not authenticated")
