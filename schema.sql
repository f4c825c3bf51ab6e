-- SimDPS corpus catalog (simdps-index build).
--
-- Portable SQL: runs unchanged on SQLite (the default, catalog.sqlite inside the index
-- folder) and PostgreSQL (--db postgresql+psycopg://...). Ids are assigned by the
-- indexer, not by the database, so no SERIAL / AUTOINCREMENT dialect is needed.
-- Times are ISO-8601 UTC strings. One index per database.

CREATE TABLE IF NOT EXISTS builds (
    id              INTEGER PRIMARY KEY,
    -- 'running' until the build commits; 'done' once its generation is the live index;
    -- 'failed' when it stopped on an error. A killed build stays 'running' and is
    -- closed as 'interrupted' by the next one.
    status          TEXT NOT NULL,
    -- index files (pre-g<N>.faiss, post-g<N>.faiss, positions-g<N>.parquet) it made live
    generation      INTEGER,
    config_json     TEXT NOT NULL,
    corpus_root     TEXT NOT NULL,
    factory         TEXT,
    workers         INTEGER NOT NULL,
    started_at      TEXT NOT NULL,
    finished_at     TEXT,
    files_seen      INTEGER NOT NULL DEFAULT 0,
    files_added     INTEGER NOT NULL DEFAULT 0,
    files_unchanged INTEGER NOT NULL DEFAULT 0,
    files_removed   INTEGER NOT NULL DEFAULT 0,
    files_failed    INTEGER NOT NULL DEFAULT 0,
    files_ignored   INTEGER NOT NULL DEFAULT 0,
    vectors         BIGINT NOT NULL DEFAULT 0,
    hours           DOUBLE PRECISION NOT NULL DEFAULT 0,
    error           TEXT
);

CREATE TABLE IF NOT EXISTS tracks (
    id              INTEGER PRIMARY KEY,
    -- path relative to the corpus root, '/'-separated
    path            TEXT NOT NULL UNIQUE,
    content_hash    TEXT NOT NULL,
    size_bytes      BIGINT NOT NULL,
    mtime_ns        BIGINT NOT NULL,
    sample_rate     INTEGER,
    channels        INTEGER,
    frames          BIGINT,
    duration_s      DOUBLE PRECISION,
    -- 'ok': its vectors are in the live index; 'error': unreadable, see error
    status          TEXT NOT NULL,
    error           TEXT,
    -- FAISS ids of its positions: [first_row, first_row + n_positions)
    first_row       BIGINT,
    n_positions     INTEGER NOT NULL DEFAULT 0,
    build_id        INTEGER NOT NULL REFERENCES builds (id),
    updated_at      TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS tracks_status ON tracks (status);
CREATE INDEX IF NOT EXISTS tracks_content_hash ON tracks (content_hash);
