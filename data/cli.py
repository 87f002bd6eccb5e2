"""`shopgraph data ...`: Ray Data stages. Each command is also a `python -m` entry point."""

from __future__ import annotations

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
