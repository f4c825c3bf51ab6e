"""The SQL catalog of an index: which tracks it holds and which builds made it.

The tables are defined once, in ``schema.sql`` (shipped inside the package), and reached
through SQLAlchemy so any URL works: SQLite inside the index folder by default,
PostgreSQL (``postgresql+psycopg://...``) for shared or large catalogs.

Consistency model: the build that makes a new set of index files live commits, in ONE
transaction, the rows of every track whose vectors those files hold together with the
build's ``generation``. Index files of any other generation are garbage. A build killed
before that transaction leaves the previous generation live and the catalog unchanged.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from simdps.errors import SimDPSError

__all__ = ["Catalog", "TrackRow", "BuildStats", "default_url", "schema_sql", "display_url"]

CATALOG_FILE = "catalog.sqlite"


def schema_sql() -> str:
    """The catalog's DDL, read from the copy of ``schema.sql`` shipped in the package."""
    return resources.files("simdps").joinpath("schema.sql").read_text(encoding="utf-8")


def default_url(index_dir: str | Path) -> str:
    """SQLite catalog inside the index folder."""
    return f"sqlite:///{Path(index_dir).resolve() / CATALOG_FILE}"


def parse_url(url: str) -> URL:
    """``url`` parsed by SQLAlchemy, or a clear error (which does not repeat it: it may hold a password)."""
    try:
        return make_url(url)
    except Exception:
        raise SimDPSError("cannot read the catalog URL (--db) as a SQLAlchemy URL; pass one such as "
                          "sqlite:////path/catalog.sqlite or postgresql+psycopg://user@host/db") from None


def display_url(url: str) -> str:
    """The URL with any password masked (what is safe to print or store in config.json)."""
    return parse_url(url).render_as_string(hide_password=True)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class TrackRow:
    """One row of ``tracks``."""

    id: int
    path: str
    content_hash: str
    size_bytes: int
    mtime_ns: int
    sample_rate: int | None
    channels: int | None
    frames: int | None
    duration_s: float | None
    status: str
    error: str | None
    first_row: int | None
    n_positions: int
    build_id: int


@dataclass
class BuildStats:
    """Counters a build records in ``builds``."""

    files_seen: int = 0
    files_added: int = 0
    files_unchanged: int = 0
    files_removed: int = 0
    files_failed: int = 0
    files_ignored: int = 0
    vectors: int = 0
    hours: float = 0.0


_TRACK_COLUMNS = [
    "id", "path", "content_hash", "size_bytes", "mtime_ns", "sample_rate", "channels", "frames",
    "duration_s", "status", "error", "first_row", "n_positions", "build_id",
]


class Catalog:
    """A connection to one index's catalog (any SQLAlchemy URL)."""

    def __init__(self, url: str, *, create: bool = True):
        self.url = url
        parsed = parse_url(url)
        if parsed.get_backend_name() == "sqlite":
            database = parsed.database or ""
            if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
                raise SimDPSError("an in-memory SQLite catalog is lost when the build ends; give a file "
                                  "(sqlite:////path/catalog.sqlite), or leave --db out to keep it in the index folder")
            if not create and not database.startswith("file:") and not Path(database).exists():
                # (connecting would create an empty file: a read must not write)
                raise SimDPSError(f"{display_url(url)}: no such catalog file; build the index first with "
                                  "`simdps-index build`, or pass the --db URL it was built with")
        try:
            self.engine: Engine = sa.create_engine(url, future=True)
        except Exception as exc:  # bad URL, missing driver
            raise SimDPSError(f"cannot use catalog URL {display_url(url)!r}: {exc}; "
                              "pass a SQLAlchemy URL such as sqlite:///x.sqlite or "
                              "postgresql+psycopg://user@host/db") from None
        try:
            if create:
                self.create_schema()
            elif not self._has_tables():
                raise SimDPSError(f"{display_url(url)} holds no SimDPS catalog; build the index first "
                                  "with `simdps-index build`")
        except sa.exc.OperationalError as exc:
            raise SimDPSError(f"cannot connect to catalog {display_url(url)}: "
                              f"{str(exc.orig).strip().splitlines()[0] if exc.orig else exc}; "
                              "check the --db URL and that the server is running") from None
        except sa.exc.DatabaseError as exc:  # e.g. a file that is not a database (overwritten, damaged)
            raise SimDPSError(f"{display_url(url)}: not a readable catalog "
                              f"({str(exc.orig).strip().splitlines()[0] if exc.orig else exc}); if it is damaged, "
                              "move it away and rebuild the index with `simdps-index build --rebuild`") from None

    # ---- schema -------------------------------------------------------------------
    def create_schema(self) -> None:
        """Run ``schema.sql`` (idempotent: every statement is IF NOT EXISTS)."""
        text = re.sub(r"--[^\n]*", "", schema_sql())
        with self.engine.begin() as conn:
            for stmt in filter(None, (s.strip() for s in text.split(";"))):
                conn.exec_driver_sql(stmt)

    def _has_tables(self) -> bool:
        names = set(sa.inspect(self.engine).get_table_names())
        return {"tracks", "builds"} <= names

    def dispose(self) -> None:
        self.engine.dispose()

    # ---- reads --------------------------------------------------------------------
    def tracks(self, status: str | None = None) -> dict[str, TrackRow]:
        """Tracks by relative path, optionally only those with ``status``."""
        sql = f"SELECT {', '.join(_TRACK_COLUMNS)} FROM tracks"
        params: dict = {}
        if status is not None:
            sql += " WHERE status = :status"
            params["status"] = status
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text(sql), params).all()
        return {r.path: TrackRow(*r) for r in rows}

    def track_by_id(self) -> dict[int, TrackRow]:
        return {t.id: t for t in self.tracks().values()}

    def live_generation(self) -> int | None:
        """Generation of the index files the last committed build made live."""
        with self.engine.connect() as conn:
            return conn.execute(sa.text(
                "SELECT generation FROM builds WHERE status = 'done' ORDER BY id DESC LIMIT 1"
            )).scalar()

    def last_build(self) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.text("SELECT * FROM builds ORDER BY id DESC LIMIT 1")).mappings().first()
        return dict(row) if row else None

    def builds(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text("SELECT * FROM builds ORDER BY id")).mappings()]

    # ---- writes -------------------------------------------------------------------
    def begin_build(self, *, config: dict, corpus_root: str, factory: str | None, workers: int) -> int:
        """Insert a 'running' build row (closing builds a kill left running) and return its id."""
        with self.engine.begin() as conn:
            conn.execute(sa.text(
                "UPDATE builds SET status = 'interrupted' WHERE status = 'running'"))
            build_id = (conn.execute(sa.text("SELECT MAX(id) FROM builds")).scalar() or 0) + 1
            conn.execute(sa.text(
                "INSERT INTO builds (id, status, config_json, corpus_root, factory, workers, started_at) "
                "VALUES (:id, 'running', :cfg, :root, :factory, :workers, :t)"),
                dict(id=build_id, cfg=json.dumps(config, sort_keys=True), root=corpus_root,
                     factory=factory, workers=workers, t=utc_now()))
        return build_id

    def next_track_id(self) -> int:
        with self.engine.connect() as conn:
            return (conn.execute(sa.text("SELECT MAX(id) FROM tracks")).scalar() or 0) + 1

    def commit_build(self, build_id: int, *, generation: int | None, upserts: Iterable[TrackRow],
                     delete_paths: Iterable[str], stats: BuildStats, factory: str | None) -> None:
        """Make a build live: track rows, removals and the build's generation in one transaction."""
        now = utc_now()
        with self.engine.begin() as conn:
            paths = list(delete_paths)
            if paths:
                conn.execute(sa.text("DELETE FROM tracks WHERE path = :path"), [{"path": p} for p in paths])
            rows = [dict(zip(_TRACK_COLUMNS, _astuple(t))) | {"updated_at": now} for t in upserts]
            if rows:
                # delete-then-insert is the portable upsert (SQLite and PostgreSQL alike)
                conn.execute(sa.text("DELETE FROM tracks WHERE path = :path"), [{"path": r["path"]} for r in rows])
                cols = _TRACK_COLUMNS + ["updated_at"]
                conn.execute(sa.text(
                    f"INSERT INTO tracks ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})"),
                    rows)
            conn.execute(sa.text(
                "UPDATE builds SET status = 'done', generation = :gen, finished_at = :t, factory = :factory, "
                "files_seen = :files_seen, files_added = :files_added, files_unchanged = :files_unchanged, "
                "files_removed = :files_removed, files_failed = :files_failed, "
                "files_ignored = :files_ignored, vectors = :vectors, hours = :hours WHERE id = :id"),
                dict(gen=generation, t=now, factory=factory, id=build_id, **stats.__dict__))

    def fail_build(self, build_id: int, error: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(
                "UPDATE builds SET status = 'failed', finished_at = :t, error = :e WHERE id = :id"),
                dict(t=utc_now(), e=error[:2000], id=build_id))


def _astuple(t: TrackRow) -> tuple:
    return tuple(getattr(t, c) for c in _TRACK_COLUMNS)
