"""``simdps-index``: build a corpus index, query it, describe it.

::

    simdps-index build CORPUS [--index DIR] [--workers N] [--db URL] [--factory STR] [--keep-signals] [--rebuild]
    simdps-index query TRACK --gap START:END --index DIR [--top K] [--json] [--no-track]
    simdps-index info --index DIR [--json]
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import click

from simdps.cli.common import GAP, run_main

__all__ = ["main", "cli"]


def _default_index(corpus: str) -> str:
    return str(Path(corpus).resolve()) + ".index"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Corpus index for similarity search (SimDPS sec. 3.2)."""


@cli.command()
@click.argument("corpus", type=click.Path(file_okay=False))
@click.option("--index", "index_dir", type=click.Path(file_okay=False),
              help="Index folder (default: CORPUS.index beside the corpus).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes that decode and embed files.")
@click.option("--db", "db_url", help="SQLAlchemy URL of the catalog (default: SQLite inside the index folder), "
                                     "e.g. postgresql+psycopg://user@host/db.")
@click.option("--factory", help="FAISS index_factory string (default: Flat for small corpora, IVF-PQ above).")
@click.option("--hop", "coarse_hop", type=click.IntRange(min=1),
              help="Position hop Lh in samples at 12 kHz (default 1024, about 85 ms; a multiple of 256).")
@click.option("--nprobe", type=click.IntRange(min=1), help="IVF lists visited per query (stored with the index).")
@click.option("--dims", type=str, metavar="STFT,CHROMA",
              help="Embedding dimensions per context side (default 64,64; wider finds more of the exact "
                   "top 10 with an exact --factory Flat, at ~4 bytes a dimension; see docs/PERFORMANCE.md).")
@click.option("--keep-signals/--no-keep-signals", default=None,
              help="Also keep each file's 12-kHz search signal (~173 MB per hour of audio), which searches read "
                   "instead of decoding and resampling the files: ~2x faster queries, ~2.7x for 44.1-kHz stereo "
                   "files (stored with the index; --no-keep-signals deletes them).")
@click.option("--rebuild", is_flag=True, help="Refit the PCA, re-embed every file and rebuild the index.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the build summary as JSON.")
def build(corpus, index_dir, workers, db_url, factory, coarse_hop, nprobe, dims, keep_signals, rebuild, quiet,
          as_json):
    """Index every audio file under CORPUS (recursively); a second run updates it incrementally."""
    from simdps.indexer.build import build_index
    from simdps.indexer.config import CONFIG_FILE, IndexConfig, read_index_config

    index_dir = index_dir or _default_index(corpus)
    config = None
    if factory or coarse_hop or nprobe or dims or keep_signals is not None:
        base = IndexConfig()
        if (Path(index_dir) / CONFIG_FILE).exists():
            base = IndexConfig.from_dict(read_index_config(index_dir)["index"])
        search = base.search if coarse_hop is None else replace(base.search, coarse_hop=coarse_hop)
        config = replace(base, search=search, factory=factory or base.factory, nprobe=nprobe or base.nprobe,
                         keep_signals=base.keep_signals if keep_signals is None else keep_signals)
        if dims:
            try:
                stft_dims, chroma_dims = (int(v) for v in dims.split(","))
            except ValueError:
                raise click.BadParameter(f"{dims!r}: give two integers, e.g. 64,64", param_hint="--dims") from None
            if stft_dims < 1 or chroma_dims < 1:
                raise click.BadParameter("both dimensions must be at least 1", param_hint="--dims")
            config = replace(config, stft_dims=stft_dims, chroma_dims=chroma_dims)
    result = build_index(corpus, index_dir, config=config, db_url=db_url, workers=workers,
                         rebuild=rebuild, progress=not quiet)
    s = result.stats
    summary = {
        "index": str(Path(index_dir)), "generation": result.generation, "factory": result.factory,
        "files_seen": s.files_seen, "added": s.files_added, "changed": result.changed, "unchanged": s.files_unchanged,
        "removed": s.files_removed, "failed": s.files_failed, "ignored": s.files_ignored,
        "hours": s.hours, "vectors": s.vectors, "seconds": result.seconds,
        "errors": [{"path": p, "error": e} for p, e in result.errors],
        "still_failing": [{"path": p, "error": e} for p, e in result.still_failing],
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    changed = f" ({result.changed} of them changed)" if result.changed else ""
    click.echo(f"{index_dir}: {s.files_added} added{changed}, {s.files_unchanged} unchanged, {s.files_removed} removed, "
               f"{s.files_failed} failed"
               + (f" (and {len(result.still_failing)} unchanged since failing before)" if result.still_failing else "")
               + f", {s.files_ignored} non-audio ignored; "
               f"{s.hours:.2f} h indexed, {s.vectors} vectors ({result.factory}), {result.seconds:.1f} s")
    for path, err in result.errors:
        click.echo(f"  skipped {path}: {err}", err=True)
    for path, err in result.still_failing:
        click.echo(f"  still skipped {path} (unchanged since: {err}); fix or remove it, or try again with "
                   "--rebuild", err=True)


@cli.command()
@click.argument("track", type=click.Path(dir_okay=False))
@click.option("--gap", required=True, type=GAP, help="The gap, START:END in seconds (or mm:ss.s).")
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False), help="Index folder.")
@click.option("--top", "k", type=click.IntRange(min=1), default=10, show_default=True, help="Candidates to print.")
@click.option("--json", "as_json", is_flag=True, help='Print {"candidates": [...]}, best first.')
@click.option("--no-track", is_flag=True, help="Search the corpus only, not TRACK itself.")
@click.option("--db", "db_url", help="Catalog URL, if the index was built with --db and a password.")
@click.option("--n-rescore", type=click.IntRange(min=1), help="Distinct ANN candidates re-scored exactly from audio (default 20).")
@click.option("--max-rescore", type=click.IntRange(min=1),
              help="At most this many when the estimates cannot tell more candidates apart (default 64; "
                   "--max-rescore equal to --n-rescore turns the adaptive extension off).")
@click.option("--rescore-margin", type=click.FloatRange(min=0),
              help="Relative estimate margin of the adaptive extension (default 0.05; 0: off).")
@click.option("--k-ann", type=click.IntRange(min=1), help="FAISS neighbours per context side (default 8192).")
@click.option("--n-complete", type=click.IntRange(min=0),
              help="Best merged candidates whose missing side is read from the index (default 256; 0: none).")
@click.option("--nprobe", type=click.IntRange(min=1), help="IVF lists visited (default: the index's).")
@click.option("--threads", type=click.IntRange(min=1), help="Threads re-scoring candidates (default: CPU count, at most 4).")
def query(track, gap, index_dir, k, as_json, no_track, db_url, n_rescore, max_rescore, rescore_margin, k_ann,
          n_complete, nprobe, threads):
    """Best segments to fill GAP of TRACK, from the index (and TRACK itself)."""
    from simdps.audio import read_audio_mono
    from simdps.errors import collect_notes
    from simdps.retrieval.api import Index
    from simdps.retrieval.index_search import SearchParams

    # The search mixes to mono anyway: decoding straight to a float32 mix keeps a long track's
    # memory at a quarter of its float64 stereo frames.
    audio, sr = read_audio_mono(track)
    index = Index.open(index_dir, db_url=db_url)
    defaults = SearchParams()
    params = SearchParams(k_ann=k_ann or defaults.k_ann, n_rescore=n_rescore or defaults.n_rescore,
                          max_rescore=max_rescore or defaults.max_rescore,
                          rescore_margin=defaults.rescore_margin if rescore_margin is None else rescore_margin,
                          n_complete=defaults.n_complete if n_complete is None else n_complete, nprobe=nprobe,
                          threads=threads)
    with collect_notes() as notes:
        cands = index.search(audio, sr, gap, k=k, include_track=not no_track, path=os.path.abspath(track),
                             params=params)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    if not cands:
        where = "the index's recordings" if no_track else "TRACK (away from the gap) or the index's recordings"
        click.echo(f"no candidate found: none of {where} holds a {gap.length_s:g}-s segment with its context "
                   "on both sides; try a shorter gap, or index longer recordings", err=True)
    if as_json:
        click.echo(json.dumps({"candidates": [c.to_json() for c in cands]}, indent=2))
        return
    if not cands:
        return
    click.echo(f"{'rank':>4}  {'cost':>8}  {'stft':>7}  {'chroma':>7}  {'start_s':>10}  source")
    for i, c in enumerate(cands, 1):
        click.echo(f"{i:>4}  {c.cost:8.4f}  {c.cost_stft:7.4f}  {c.cost_chroma:7.4f}  {c.start_s:10.4f}  "
                   f"{c.path} @ {c.start_sample} ({c.sample_rate} Hz)")


@cli.command()
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False), help="Index folder.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option("--db", "db_url", help="Catalog URL, if the index was built with --db and a password.")
def info(index_dir, as_json, db_url):
    """Tracks, hours, vectors, FAISS factory and size on disk of an index."""
    from simdps.retrieval.api import Index

    data = Index.open(index_dir, db_url=db_url).info()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    per_hour = data["bytes_per_hour"]
    lines = [
        f"index        {data['index']} (generation {data['generation']})",
        f"corpus       {data['corpus_root']}",
        f"catalog      {data['catalog']}",
        f"tracks       {data['tracks']} ({data['failed_files']} unreadable files recorded)",
        f"hours        {data['hours']:.3f}",
        f"vectors      {data['vectors']['pre']} pre + {data['vectors']['post']} post, {data['dim']}-d",
        f"factory      {data['factory']} (nprobe {data['nprobe']}), hop {data['coarse_hop']} samples at 12 kHz",
        f"size         {data['size_bytes'] / 1e6:.2f} MB"
        + (f" ({per_hour / 1e6:.2f} MB per hour of audio)" if per_hour else ""),
        f"build cache  {data['cache_bytes'] / 1e6:.2f} MB (embedding shards for incremental builds)",
    ]
    if data["signals_bytes"]:
        lines.append(f"signals      {data['signals_bytes'] / 1e6:.2f} MB (kept search signals: --keep-signals)")
    click.echo("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``simdps-index``."""
    run_main(cli, argv)


if __name__ == "__main__":  # pragma: no cover
    main()

