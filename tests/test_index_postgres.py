"""The catalog on a real PostgreSQL server (started here, stopped at teardown).

Skipped when no PostgreSQL binaries are installed, unless SIMDPS_REQUIRE_POSTGRES=1
(set by .ci/run), in which case their absence fails the test.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile

import pytest
import soundfile as sf
import sqlalchemy as sa
from conftest import piano_like

from simdps.indexer.build import build_index
from simdps.indexer.catalog import Catalog
from simdps.indexer.config import IndexConfig
from simdps.retrieval.api import Index

pytestmark = pytest.mark.postgres

SMALL = IndexConfig(stft_dims=32, chroma_dims=16, pca_train_positions=1500)


def _pg_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    bindir = _pg_bin()
    if bindir is None:
        if os.environ.get("SIMDPS_REQUIRE_POSTGRES") == "1":
            pytest.fail("SIMDPS_REQUIRE_POSTGRES=1 but no PostgreSQL binaries (initdb, pg_ctl) are installed")
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) installed; apt-get install postgresql to run this")
    # PostgreSQL refuses to run as root: run it as the 'postgres' user in a folder it owns.
    as_user: list[str] = []
    base = tempfile.mkdtemp(prefix="simdps-pg-")
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = os.path.join(base, "data"), _free_port()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True)  # noqa: E731
    try:
        run(f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        run(f"{bindir}/pg_ctl", "-D", data, "-l", os.path.join(base, "log"), "-w", "-t", "60", "start",
            "-o", f"-k {base} -p {port} -c listen_addresses='' -c fsync=off")
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {exc.stderr or exc.stdout}")
    try:
        yield f"postgresql+psycopg://postgres@/postgres?host={base}&port={port}"
    finally:
        subprocess.run([*as_user, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_catalog_on_postgresql_builds_updates_and_serves_the_index(postgres_url, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    sf.write(corpus / "a.wav", piano_like(12.0, 16_000, seed=1), 16_000)
    sf.write(corpus / "b.flac", piano_like(10.0, 22_050, seed=2), 22_050)
    (corpus / "bad.wav").write_bytes(b"not audio at all")
    index_dir = tmp_path / "idx"

    first = build_index(corpus, index_dir, config=SMALL, db_url=postgres_url, progress=False)
    assert (first.stats.files_added, first.stats.files_failed) == (2, 1)
    assert not (index_dir / "catalog.sqlite").exists(), "the catalog lives in PostgreSQL"

    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT path, status, sample_rate FROM tracks ORDER BY path")).all()
        builds = conn.execute(sa.text("SELECT status, files_added, generation FROM builds")).all()
    assert [tuple(r) for r in rows] == [("a.wav", "ok", 16_000), ("b.flac", "ok", 22_050), ("bad.wav", "error", None)]
    assert [tuple(b) for b in builds] == [("done", 2, first.generation)]

    # incremental, with the URL remembered in config.json (no password in it)
    sf.write(corpus / "c.wav", piano_like(9.0, 16_000, seed=3), 16_000)
    (corpus / "a.wav").unlink()
    second = build_index(corpus, index_dir, progress=False)
    assert (second.stats.files_added, second.stats.files_removed) == (1, 1)
    cat = Catalog(postgres_url, create=False)
    assert sorted(t.path for t in cat.tracks(status="ok").values()) == ["b.flac", "c.wav"]
    assert cat.live_generation() == second.generation
    cat.dispose()

    index = Index.open(index_dir)
    info = index.info()
    assert info["tracks"] == 2 and info["catalog"].startswith("postgresql+psycopg://")
    y = piano_like(12.0, 16_000, seed=9)
    cands = index.search(y, 16_000, (5.0, 6.0), k=3, include_track=False)
    assert cands and {c.source for c in cands} == {"index"}
    engine.dispose()
