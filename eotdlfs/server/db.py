"""The server's metadata database: one schema on SQLite or PostgreSQL (SQLAlchemy Core), migrations, transactions.

SQLAlchemy defines the schema, creates and migrates it, and pools connections. Queries are SQL
text with `?` placeholders, written in the subset both engines speak, run on the driver's own
cursor (`Tx.execute`: SQLAlchemy's statement layer would cost about a third of the Range GETs a
replica answers per second). Transactions are begun explicitly on connections in autocommit
mode, so each engine gets the kind it needs:

- SQLite: reads in `BEGIN` (WAL lets them run while an ingest writes); writes in `BEGIN IMMEDIATE`
  behind one process-wide lock, so "next version = max + 1" never races between worker threads,
  and SQLite's own write lock covers other processes.
- PostgreSQL: reads in `REPEATABLE READ READ ONLY` (several queries see one state); writes in
  `READ COMMITTED`, where a write locks its record's row first (`Tx.for_update`), so writers on
  the same record queue up whichever replica they run on, and each statement after the lock sees
  every earlier commit. A publish is therefore a compare-and-swap across replicas.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from sqlalchemy.engine import Connection, Engine

from eotdlfs.server.errors import database_timeout

DB_FILE = "repository.db"
SCHEMA_VERSION = 1
_INT64 = (-(2**63), 2**63 - 1)
# statement_timeout, lock_timeout; SQLite's busy timeout (SQLITE_BUSY, SQLITE_LOCKED); a pool with no free connection
_TIMEOUTS = (pg_errors.QueryCanceled, pg_errors.LockNotAvailable, sa.exc.TimeoutError)
_SQLITE_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)

# Bytewise order on both engines ("C" on PostgreSQL, SQLite's default BINARY): the path range
# query of `Store._put_in_version` relies on '/' sorting right before '0'.
_TEXT = sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")



def version_files_query(columns: str, where: str = "vf.record_id = ? AND vf.version = ?") -> str:
    """SELECT COLUMNS of the files of versions: `vf` a version_files row, `fv` the file_versions
    row it names (path, checksum, size, created_at); WHERE (a version's by default; none when empty)."""
    return ("SELECT " + columns + " FROM version_files vf JOIN file_versions fv ON fv.record_id = vf.record_id"
            " AND fv.path = vf.path AND fv.file_version = vf.file_version" + (" WHERE " + where if where else ""))


def held_by_versions(which: str) -> str:
    """Whether the file version `fv` is in a version of the record (WHICH: more conditions on `v`):
    one primary-key probe of version_files per version. Nested so the versions come first: as one
    join (or searched by the record alone) SQLite walked all of the record's version_files rows (its
    key has the version before the path) for each file version: 0.5 ms per download, 6 s to list a
    10,000-file record, and 4.3 s under the write lock to discard a draft of one with 6 versions."""
    return ("EXISTS (SELECT 1 FROM versions v WHERE v.record_id = fv.record_id" + which +
            " AND EXISTS (SELECT 1 FROM version_files vf WHERE vf.record_id = v.record_id"
            " AND vf.version = v.version AND vf.path = fv.path AND vf.file_version = fv.file_version))")


PUBLISHED = held_by_versions(" AND v.draft = 0")
IN_A_VERSION = held_by_versions("")

metadata = sa.MetaData()
sa.Table("records", metadata,
         sa.Column("id", _TEXT, primary_key=True),
         sa.Column("kind", _TEXT, nullable=False),
         sa.Column("uid", _TEXT, nullable=False),
         sa.Column("name", _TEXT, nullable=False),
         sa.Column("authors", _TEXT, nullable=False),  # JSON list
         sa.Column("source", _TEXT, nullable=False),
         sa.Column("license", _TEXT, nullable=False),
         sa.Column("description", _TEXT, nullable=False, server_default=""),
         sa.Column("files_id", _TEXT, nullable=False),
         sa.Column("created_at", _TEXT, nullable=False),
         sa.Column("updated_at", _TEXT, nullable=False),
         sa.UniqueConstraint("kind", "name"))
sa.Table("versions", metadata,
         sa.Column("record_id", _TEXT, sa.ForeignKey("records.id"), primary_key=True),
         sa.Column("version", sa.BigInteger, primary_key=True),
         sa.Column("created_at", _TEXT, nullable=False),
         sa.Column("draft", sa.Integer, nullable=False, server_default="0"))
# One row per (path, file version); its bytes are the blob named by checksum.
sa.Table("file_versions", metadata,
         sa.Column("record_id", _TEXT, sa.ForeignKey("records.id"), primary_key=True),
         sa.Column("path", _TEXT, primary_key=True),
         sa.Column("file_version", sa.BigInteger, primary_key=True),
         sa.Column("checksum", _TEXT, nullable=False),
         sa.Column("size", sa.BigInteger, nullable=False),
         sa.Column("created_at", _TEXT, nullable=False))
# Which file version of each path a record version contains (at most one per path).
sa.Table("version_files", metadata,
         sa.Column("record_id", _TEXT, primary_key=True),
         sa.Column("version", sa.BigInteger, primary_key=True),
         sa.Column("path", _TEXT, primary_key=True),
         sa.Column("file_version", sa.BigInteger, nullable=False))
# The sum of the sizes of a version's files, kept by every write to version_files, so listing
# records does not sum every file of every version.
sa.Table("version_sizes", metadata,
         sa.Column("record_id", _TEXT, primary_key=True),
         sa.Column("version", sa.BigInteger, primary_key=True),
         sa.Column("size", sa.BigInteger, nullable=False))
# Records made by `POST datasets/stac` (S1): STAC datasets (quality 1) before any version has its catalog.
sa.Table("stac_records", metadata,
         sa.Column("record_id", _TEXT, sa.ForeignKey("records.id"), primary_key=True))
sa.Table("uploads", metadata,
         sa.Column("upload_id", _TEXT, primary_key=True),
         sa.Column("record_id", _TEXT, nullable=False),
         sa.Column("uid", _TEXT, nullable=False),
         sa.Column("path", _TEXT, nullable=False),
         sa.Column("file_version", sa.BigInteger, nullable=False),
         sa.Column("checksum", _TEXT, nullable=False),
         sa.Column("created_at", _TEXT, nullable=False))
sa.Table("api_keys", metadata,
         sa.Column("key_hash", _TEXT, primary_key=True),
         sa.Column("uid", _TEXT, nullable=False),
         sa.Column("created_at", _TEXT, nullable=False))
# Named values of the repository: 'schema_version', and 'secret' when the database is shared (--db).
sa.Table("settings", metadata,
         sa.Column("name", _TEXT, primary_key=True),
         sa.Column("value", _TEXT, nullable=False))


def engine_url(root: Path | None, url: str | None) -> str:
    """The SQLAlchemy URL of `--db URL` (None: ROOT/repository.db); PostgreSQL goes through psycopg 3."""
    if url is None:
        if root is None:
            raise ValueError("a repository needs --root or --db")
        return f"sqlite:///{Path(root) / DB_FILE}"
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    if url.startswith(("sqlite:///", "postgresql+psycopg://")):
        return url
    raise ValueError(f"--db must be sqlite:///PATH or postgresql://USER@HOST:PORT/DB, not {url!r}")


Row = Mapping[str, Any]  # a result row: row["column"]


class TextWithNul(ValueError):
    """A text for PostgreSQL holds a NUL, which its text cannot (psycopg's DataError was a 500)."""


class Tx:
    """One connection inside one transaction (or, from `Database.query`, one statement)."""

    def __init__(self, conn: Connection, postgres: bool, writing: bool):
        self._conn, self._postgres = conn, postgres
        self._dbapi: Any = conn.connection.dbapi_connection
        self.for_update = " FOR UPDATE" if postgres and writing else ""  # append to a SELECT of the row to lock

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run SQL (with `?` placeholders); a DB-API cursor whose rows are `Row`s."""
        if not self._postgres:
            return self._dbapi.execute(sql, tuple(params))
        for value in params:
            if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
                raise OverflowError("a number in the request is out of range")  # as sqlite3 does
            if isinstance(value, str) and "\x00" in value:
                raise TextWithNul("a text in the request contains a NUL character")
        cursor = self._dbapi.cursor(row_factory=dict_row)
        cursor.execute(sql.replace("?", "%s"), tuple(params) if params else None)
        return cursor

    def create_all(self) -> None:
        """Create the tables of the schema this database lacks."""
        metadata.create_all(self._conn)


class Database:
    """The metadata database of one repository, safe to use from any thread and any replica."""

    def __init__(self, root: Path | None, url: str | None = None, read_only: bool = False, timeout_s: int = 30):
        """READ_ONLY (fsck): no migration, and SQLite opens the file read-only. TIMEOUT_S bounds each
        statement and each wait for a lock or a connection; past it, `ApiError` 503."""
        self.shared = url is not None  # given with --db: holds the signing secret too
        self.timeout_s = timeout_s
        self.engine: Engine = _engine(engine_url(root, url), read_only, timeout_s)
        self.postgres = self.engine.dialect.name == "postgresql"
        self._write_lock = threading.Lock() if not self.postgres else None
        if not read_only:
            self._migrate()

    @contextmanager
    def query(self) -> Iterator[Tx]:
        """For one statement, which sees one state on its own: no transaction around it."""
        with self._in_time(), self.engine.connect() as conn:
            yield Tx(conn, self.postgres, writing=False)

    @contextmanager
    def read(self) -> Iterator[Tx]:
        """A read snapshot: several queries see one state, whatever commits meanwhile."""
        begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if self.postgres else "BEGIN"
        with self._in_time(), self.engine.connect() as conn:
            conn.exec_driver_sql(begin)
            try:
                yield Tx(conn, self.postgres, writing=False)
            finally:
                conn.exec_driver_sql("COMMIT")  # after a failed statement, PostgreSQL rolls back instead

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """One write transaction: all its statements land together or not at all."""
        with self._in_time(), self._writer_turn(), self.engine.connect() as conn:
            conn.exec_driver_sql("BEGIN" if self.postgres else "BEGIN IMMEDIATE")
            try:
                yield Tx(conn, self.postgres, writing=True)
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")  # the connection goes back to the pool usable
                raise
            conn.exec_driver_sql("COMMIT")

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        """SQLite's one writer at a time, waited for no longer than a statement may take."""
        if self._write_lock is None:
            yield
            return
        if not self._write_lock.acquire(timeout=self.timeout_s):
            raise database_timeout(self.timeout_s)
        try:
            yield
        finally:
            self._write_lock.release()

    @contextmanager
    def _in_time(self) -> Iterator[None]:
        """A statement or wait that ran out of time becomes the 503 clients retry, not a 500."""
        try:
            yield
        except Exception as exc:
            cause = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error
            if isinstance(cause, _TIMEOUTS) or getattr(cause, "sqlite_errorcode", None) in _SQLITE_BUSY:
                raise database_timeout(self.timeout_s) from exc
            raise

    def setting(self, tx: Tx, name: str) -> str | None:
        row = tx.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return row["value"] if row else None

    def setting_or_default(self, name: str, default: str) -> str:
        """NAME's value; DEFAULT is stored first when it has none (the first replica to ask wins)."""
        with self.write() as tx:
            tx.execute("INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                       (name, default))
            return self.setting(tx, name) or default

    def close(self) -> None:
        self.engine.dispose()

    def _migrate(self) -> None:
        """Bring the schema up to date: a database of any earlier layout opens and upgrades.

        Every open creates the tables a database lacks (the SQLite layout before this module used
        SQLAlchemy has no settings, and older ones no version_sizes), fills in missing version
        sizes and records SCHEMA_VERSION; a later change of a column adds its step here.
        One replica migrates at a time (SQLite's write lock; an advisory lock on PostgreSQL).
        """
        with self.write() as tx:
            if self.postgres:
                tx.execute("SELECT pg_advisory_xact_lock(1702)")  # any fixed number: "the migration"
            tx.create_all()
            _add_version_sizes(tx)
            tx.execute("INSERT INTO settings (name, value) VALUES ('schema_version', ?) ON CONFLICT (name)"
                       " DO UPDATE SET value = excluded.value", (str(SCHEMA_VERSION),))


def _engine(url: str, read_only: bool, timeout_s: int) -> Engine:
    if url.startswith("sqlite"):
        if read_only:
            url = f"sqlite:///file:{url[len('sqlite:///'):]}?mode=ro&uri=true"
        # transactions are ours (Database.read/write): nothing to reset when a connection goes back
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", pool_size=8, max_overflow=64,
                                  pool_reset_on_return=None, pool_timeout=timeout_s,
                                  connect_args={"timeout": timeout_s, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.row_factory = sqlite3.Row
            if not read_only:
                dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute(f"PRAGMA busy_timeout={timeout_s * 1000}")
            dbapi_conn.execute("PRAGMA synchronous=FULL")  # a 200 means the rows survive a power loss too

        return engine
    # Up to 48 connections per replica (uvicorn runs sync routes on 40 threads); PostgreSQL's
    # default max_connections of 100 thus fits two replicas.
    url, options = _pg_options(url, timeout_s)
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", pool_size=8, max_overflow=40,
                            pool_reset_on_return=None, pool_pre_ping=True, pool_recycle=3600, pool_timeout=timeout_s,
                            connect_args={"connect_timeout": timeout_s, "options": options})


def _pg_options(url: str, timeout_s: int) -> tuple[str, str]:
    """URL without its `options=`, and the server options to connect with: the statement bounds of
    TIMEOUT_S, then the URL's own options (else PGOPTIONS, which libpq ignores once any are given),
    so a schema or setting the operator named applies too, and their own statement_timeout wins."""
    parsed = sa.engine.make_url(url)
    given = parsed.query.get("options", os.environ.get("PGOPTIONS", ""))
    given = " ".join(given) if isinstance(given, tuple) else given  # `options=` more than once
    ms = timeout_s * 1000
    options = f"-c statement_timeout={ms} -c lock_timeout={ms} {given}".strip()
    return parsed.difference_update_query(["options"]).render_as_string(hide_password=False), options


def _add_version_sizes(tx: Tx) -> None:
    """Give every version without a stored size its size (databases made before sizes were stored)."""
    tx.execute(
        "INSERT INTO version_sizes (record_id, version, size)"
        " SELECT v.record_id, v.version, (" + version_files_query(
            "COALESCE(SUM(fv.size), 0)", "vf.record_id = v.record_id AND vf.version = v.version") + ")"
        " FROM versions v WHERE NOT EXISTS (SELECT 1 FROM version_sizes s"
        " WHERE s.record_id = v.record_id AND s.version = v.version)")
