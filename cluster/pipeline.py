"""The whole product on one machine: data -> train -> index -> serve, as `shopgraph demo` runs it.

    shopgraph demo                       # then keeps serving until Ctrl-C
    shopgraph demo --exit-after-requests # CI / scripted runs

Each stage is the same function its CLI command and `ray job submit` entry point call. A
stage whose committed output already exists is skipped (its manifest verified), so a second
demo starts serving in about a minute; `--fresh` rebuilds everything.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.layout import ArtifactLayout


def _done(path: str | Path) -> bool:
    from core.manifest import IncompleteDirError, verify_dir

    try:
        verify_dir(Path(path))
        return True
    except IncompleteDirError:
        return False


def stages(cfg) -> list[tuple[str, Callable[[Any], Any], str]]:
    """(name, run(cfg), committed output that marks it done), in dependency order."""
    from data import corpus, embed, index, splits
    from data.prepare import prepare
    from train.ranker import train_ranker
    from train.recommender import train_recommender

    layout = ArtifactLayout(cfg.artifacts.root)
    return [
        ("data prepare", lambda c: prepare(c, log=lambda *a, **k: None), layout.events),
        ("data split", splits.run, layout.splits),
        ("data corpus", corpus.run, layout.corpora),
        ("data embed-products", embed.run, layout.embeddings),
        ("data index", index.run, layout.index),
        ("train recommender", train_recommender, layout.recommender),
        ("train ranker", train_ranker, layout.ranker),
    ]


def run_pipeline(cfg, *, fresh: bool = False, echo: Callable[[str], None] = print) -> dict[str, float]:
    """Run every stage not already complete; returns seconds per stage."""
    from core.runtime import ensure_ray

    ensure_ray(cfg)
    timings: dict[str, float] = {}
    for name, run, output in stages(cfg):
        if not fresh and _done(output):
            echo(f"  {name:22s} up to date ({output})")
            continue
        started = time.perf_counter()
        run(cfg)
        timings[name] = time.perf_counter() - started
        echo(f"  {name:22s} done in {timings[name]:.1f}s")
    return timings
