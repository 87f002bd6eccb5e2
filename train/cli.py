"""`shopgraph train ...`: Ray Train recipes and evaluation. Each is also a `python -m` entry point:

    python -m train.recommender --config configs/local.yaml
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cluster.cli_common import ConfigOpt, SetOpt, load_or_exit

app = typer.Typer(help="Train with Ray Train and evaluate: the sequential recommender (SASRec), the ranker over its candidates, and the generator LM.", no_args_is_help=True)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@app.command()
def recommender(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Train SASRec with Ray Train, evaluate it and export it under <artifacts>/models/recommender.

    Reads the leave-one-out split from `shopgraph data split`; evaluation covers both
    protocols and the popularity / co-occurrence baselines.
    """
    from train.recommender import train_recommender

    cfg = load_or_exit(config, set_)
    try:
        meta = train_recommender(cfg)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    typer.echo(json.dumps({"best_epoch": meta["best_epoch"], "selected_on": meta["selected_on"], "best_valid_score": meta["best_valid_score"], "test": meta["test"]}, indent=2))


@app.command()
def ranker(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Train the second-stage ranker on the recommender's retrieval candidates with Ray Train.

    Reports NDCG@10 of the ranker's order against the retrieval order on held-out test
    targets and exports it (with the features' item table) under <artifacts>/models/ranker.
    """
    from train.ranker import train_ranker

    cfg = load_or_exit(config, set_)
    try:
        meta = train_ranker(cfg)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    typer.echo(json.dumps(meta["test"], indent=2))


@app.command()
def evaluate(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Evaluate the exported recommender and its baselines; writes metrics.json + report.html.

    Both protocols: the test item vs sampled negatives (SASRec) and vs all items (full
    ranking); baselines: popularity and item-to-item co-occurrence.
    """
    from data.manifest import IncompleteDirError
    from train.recommender import evaluate_exported

    cfg = load_or_exit(config, set_)
    try:
        results = evaluate_exported(cfg)
    except (FileNotFoundError, ValueError, IncompleteDirError) as e:
        _fail(f"{e}; train one first with `shopgraph train recommender`")
    typer.echo(json.dumps(results, indent=2))


@app.command()
def generator(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Fine-tune the generator LM (SFT, DeepSpeed) on the PDP + reasons corpora; export under <artifacts>/models/generator.

    Reads `shopgraph data corpus` output; base model = models.generator. Checks the base model
    and train.generator (ZeRO stage, max_seq_len vs the model's context) before any worker starts.
    """
    from data.manifest import IncompleteDirError
    from train.generator import train_generator

    cfg = load_or_exit(config, set_)
    try:
        meta = train_generator(cfg)
    except (FileNotFoundError, ValueError, IncompleteDirError) as e:
        _fail(str(e))
    typer.echo(json.dumps({"model_version": meta["model_version"], **{k: v for k, v in meta["metrics"].items() if k != "curves"}}, indent=2))


@app.command("eval-generator")
def eval_generator(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model_dir: Annotated[str | None, typer.Option("--model-dir", help="Fine-tuned model dir (default: <artifacts>/models/generator).")] = None,
) -> None:
    """Evaluate base vs fine-tuned generator on held-out products: BLEU, ROUGE-L, distinct-2,
    JSON validity, unsupported-claim rate. Writes <artifacts>/reports/generator/eval.{json,md,html}."""
    from data.manifest import IncompleteDirError
    from train.eval_generator import evaluate_generator, summary_rows

    cfg = load_or_exit(config, set_)
    try:
        report = evaluate_generator(cfg, model_dir=model_dir)
    except (FileNotFoundError, ValueError, IncompleteDirError) as e:
        _fail(f"{e}; train one first with `shopgraph train generator` (or pass --model-dir)")
    for row in summary_rows(report):
        typer.echo("  ".join(row))
