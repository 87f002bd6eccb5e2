"""`shopgraph data ...`: Ray Data stages. Each command is also a `python -m` entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from cluster.cli_common import ConfigOpt, SetOpt, load_or_exit

app = typer.Typer(help="Prepare data with Ray Data: readers, validation, shards, splits, corpora, embeddings, index.", no_args_is_help=True)


@app.command()
def embed(
    texts: Annotated[list[str], typer.Argument(help="Texts to embed; similarities between them are printed.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Embed TEXTS with the configured encoder and print their cosine-similarity matrix."""
    from data.encoder import TextEncoder, resolve_encoder_dir

    cfg = load_or_exit(config, set_)
    encoder = TextEncoder(resolve_encoder_dir(cfg.models.dir, cfg.models.encoder))
    vectors = encoder.encode(texts)
    sims = vectors @ vectors.T
    typer.echo(f"{len(texts)} texts -> {vectors.shape[1]}-d vectors (L2-normalized)")
    for i, text in enumerate(texts):
        row = " ".join(f"{s:5.2f}" for s in np.asarray(sims[i]))
        typer.echo(f"  [{row}]  {text}")


@app.command("prepare")
def prepare(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Read data.sources (or the embedded sample), validate, quarantine, write products/events shards (data.prepare).

    Prints the row accounting per source (read = kept + quarantined). A missing file or
    column stops before any work, naming the data.sources key to change (exit 2).
    """
    from data.prepare import prepare as run_prepare
    from data.sources import SourceError

    cfg = load_or_exit(config, set_)
    try:
        run_prepare(cfg, log=typer.echo)
    except SourceError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


@app.command("sample")
def sample(
    out: Annotated[Path, typer.Option("--out", help="Directory for products.jsonl and events.csv.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Write the embedded sample (sized by data.sample, seeded by data.seed) as raw files that data.sources can read."""
    from data.sample import write_sample_files

    cfg = load_or_exit(config, set_)
    products, events = write_sample_files(out, cfg.data.sample, cfg.data.seed)
    typer.echo(f"wrote {products} and {events}; read them back with data.sources:")
    typer.echo(f"  - {{name: products, format: jsonl, path: {products}, table: products}}")
    typer.echo(f"  - {{name: events, format: csv, path: {events}, table: events, timestamp_unit: ms}}")


def _run_stage(name: str, config, set_) -> None:
    """Run `data.<name>.run(cfg)`, print its summary as JSON; input problems exit 1 with the reason."""
    import importlib
    import json

    from data.manifest import IncompleteDirError

    cfg = load_or_exit(config, set_)
    try:
        summary = importlib.import_module(f"data.{name}").run(cfg)
    except (ValueError, FileNotFoundError, IncompleteDirError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(summary, indent=2, ensure_ascii=False, default=str))


@app.command("split")
def split(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Events -> id maps, per-user sequences, leave-one-out + temporal splits, item popularity (data.splits)."""
    _run_stage("splits", config, set_)


@app.command("corpus")
def corpus(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Products (+ events) -> fine-tuning JSONL: PDP sections and personalized reasons (data.corpus)."""
    _run_stage("corpus", config, set_)


@app.command("embed-products")
def embed_products(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Embed every product's text with the encoder on a Ray Data actor pool -> Parquet vectors (data.embedding)."""
    _run_stage("embed", config, set_)


@app.command("index")
def index(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Embeddings -> FAISS index (flat / ivf / hnsw, data.index) with ids, manifest and recall@10."""
    _run_stage("index", config, set_)


@app.command("generate-content")
def generate_content(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model_dir: Annotated[str | None, typer.Option("--model-dir", help="Generator to use (default: <artifacts>/models/generator).")] = None,
) -> None:
    """PDP content for every product with Ray Data + vLLM, grounded, keyed by facts_hash + model_version (train.batch_generate)."""
    import json

    from data.manifest import IncompleteDirError
    from train.batch_generate import generate_content as run  # lazy: the data package stays free of vLLM

    cfg = load_or_exit(config, set_)
    try:
        typer.echo(json.dumps(run(cfg, model_dir=model_dir), indent=2))
    except (FileNotFoundError, ValueError, IncompleteDirError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
