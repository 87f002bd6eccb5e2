"""`shopgraph train ...`: Ray Train recipes and evaluation. Each command calls its recipe module's
`main(argv)`, the same function `python -m` runs (`core.cli.stage_main`):

    python -m train.recommender --config configs/local.yaml
"""

from __future__ import annotations

from typing import Annotated

import typer

from core.cli import ConfigOpt, SetOpt, stage_argv

app = typer.Typer(
    help="Train with Ray Train and evaluate: the sequential recommender (SASRec), the ranker over its candidates, and the generator LM.",
    no_args_is_help=True,
)


@app.command()
def recommender(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    warm_start: Annotated[
        bool,
        typer.Option(
            "--warm-start",
            help="Start from the exported model: known items keep their vectors, new items get new rows (pair with --set data.splits.keep_item_ids=true on `data split`).",
        ),
    ] = False,
) -> None:
    """Train SASRec with Ray Train, evaluate it and export it under <artifacts>/models/recommender.

    Reads the leave-one-out split from `shopgraph data split`; evaluation covers both
    protocols and the popularity / co-occurrence baselines.
    """
    from train import recommender as recipe

    raise typer.Exit(recipe.main(stage_argv(config, set_) + (["--warm-start"] if warm_start else [])))


@app.command()
def ranker(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Train the second-stage ranker on the recommender's retrieval candidates with Ray Train.

    Reports NDCG@10 of the ranker's order against the retrieval order on held-out test
    targets and exports it (with the features' item table) under <artifacts>/models/ranker.
    """
    from train import ranker as recipe

    raise typer.Exit(recipe.main(stage_argv(config, set_)))


@app.command()
def sentiment(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Train the review sentiment model (Chinese and English) on labelled files and the shop's rated reviews.

    Scores a held-out share per language, then commits the model under <artifacts>/models/sentiment.
    """
    from train import sentiment as recipe

    raise typer.Exit(recipe.main(stage_argv(config, set_)))


@app.command()
def generator(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Fine-tune the generator LM (SFT, DeepSpeed) on the PDP + reasons corpora; export under <artifacts>/models/generator.

    Reads `shopgraph data corpus` output; base model = models.generator. Checks the base model
    and train.generator (ZeRO stage, max_seq_len vs the model's context) before any worker starts.
    """
    from train import generator as recipe

    raise typer.Exit(recipe.main(stage_argv(config, set_)))


@app.command("eval-generator")
def eval_generator(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model_dir: Annotated[
        str | None, typer.Option("--model-dir", help="Fine-tuned model dir (default: <artifacts>/models/generator).")
    ] = None,
) -> None:
    """Evaluate base vs fine-tuned generator on held-out products: BLEU, ROUGE-L, distinct-2,
    JSON validity, unsupported-claim rate. Writes <artifacts>/reports/generator/eval.{json,md,html}."""
    from train import eval_generator as recipe

    raise typer.Exit(recipe.main(stage_argv(config, set_, model_dir=model_dir)))
