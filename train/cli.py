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
def evaluate(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    parts: Annotated[
        str | None,
        typer.Option("--parts", help="Comma-separated: recommender,ranker,generator,serving (default: all).",
                     show_default=False),
    ] = None,
) -> None:
    """Evaluate every trained model in one report: <artifacts>/reports/evaluation/{metrics.json, report.html}.

    recommender: both protocols (sampled negatives, full ranking) with the popularity and
    co-occurrence baselines; ranker: its order vs the retrieval order on test targets;
    generator: BLEU / ROUGE-L / distinct-2 / unsupported claims of the fine-tuned model on a few
    held-out products; serving: p50/p99 of in-process recommendation requests. A part whose
    model is not trained is skipped with a line that says what to run.
    """
    from cluster.evaluate import EvaluationInputError, evaluated_parts, parse_parts, run_evaluation
    from data.manifest import IncompleteDirError

    try:
        chosen = parse_parts(parts)
    except EvaluationInputError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    cfg = load_or_exit(config, set_)
    try:
        metrics = run_evaluation(cfg, chosen, echo=typer.echo)
    except (FileNotFoundError, ValueError, IncompleteDirError) as e:
        _fail(str(e))
    if not evaluated_parts(metrics):
        _fail(f"nothing was evaluated: every requested part ({','.join(chosen)}) was skipped, see above; "
              "train a model first, e.g. `shopgraph train recommender`")


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
