"""`shopgraph data ...`: Ray Data stages. Each command calls its stage module's `main(argv)`,
the same function `python -m data.<stage>` runs (`core.cli.stage_main`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from core.cli import ConfigOpt, SetOpt, load_or_exit, stage_argv

app = typer.Typer(
    help="Prepare data with Ray Data: readers, validation, shards, splits, corpora, embeddings, index.",
    no_args_is_help=True,
)


@app.command()
def embed(
    texts: Annotated[list[str], typer.Argument(help="Texts to embed; similarities between them are printed.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Embed TEXTS with the configured encoder and print their cosine-similarity matrix."""
    from ml.encoder import TextEncoder, resolve_encoder_dir

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
    from data import prepare as stage

    raise typer.Exit(stage.main(stage_argv(config, set_)))


@app.command("erase-user")
def erase_user(
    user_id: Annotated[str, typer.Option("--user-id", help="The raw user id to erase (it is hashed, never stored).")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Record a tombstone for USER_ID (pseudonyms only): later prepare, split and corpus runs drop their rows (data.erase)."""
    from data import erase as stage

    raise typer.Exit(stage.main(stage_argv(config, set_, user_id=user_id)))


@app.command("sample")
def sample(
    out: Annotated[Path, typer.Option("--out", help="Directory for products.jsonl and events.csv.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Write the embedded sample (sized by data.sample, seeded by data.seed) as raw files that data.sources can read."""
    from data import sample as stage

    raise typer.Exit(stage.main(stage_argv(config, set_, out=out)))


@app.command("split")
def split(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Events -> id maps, per-user sequences, leave-one-out + temporal splits, item popularity (data.splits)."""
    from data import splits as stage

    raise typer.Exit(stage.main(stage_argv(config, set_)))


@app.command("corpus")
def corpus(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Products (+ events) -> fine-tuning JSONL: PDP sections and personalized reasons (data.corpus)."""
    from data import corpus as stage

    raise typer.Exit(stage.main(stage_argv(config, set_)))


@app.command("embed-products")
def embed_products(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Embed every product's text with the encoder on a Ray Data actor pool -> Parquet vectors (data.embed)."""
    from data import embed as stage

    raise typer.Exit(stage.main(stage_argv(config, set_)))


@app.command("index")
def index(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Embeddings -> FAISS index (flat / ivf / hnsw, data.index) with ids, manifest and recall@10."""
    from data import index as stage

    raise typer.Exit(stage.main(stage_argv(config, set_)))
