"""`shopgraph serve ...`: run the Serve application on the configured Ray cluster.

shopgraph serve run                      # local Ray, blocks until Ctrl-C
serve run serve.app:build_app config_path=configs/local.yaml      # Ray's own CLI, same app
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

from core.cli import ConfigOpt, SetOpt, load_or_exit

app = typer.Typer(
    help="Serve recommendations and product pages with Ray Serve (ingress -> retriever -> ranker -> generator).",
    no_args_is_help=True,
)


def start_app(cfg, config_path: str | None, overrides: list[str], engine: str = "vllm") -> str:
    """Deploy the application on the configured Ray cluster; returns its base URL."""
    from ray import serve

    from core.runtime import ensure_ray
    from serve.app import build_app

    ensure_ray(cfg)
    serve.start(
        proxy_location=cfg.serve.http.proxy_location,
        http_options={"host": cfg.serve.http.host, "port": cfg.serve.http.port},
    )
    serve.run(
        build_app({"config_path": config_path, "overrides": overrides, "engine": engine}),
        name=cfg.serve.app_name,
        route_prefix=cfg.serve.route_prefix,
    )
    host = "127.0.0.1" if cfg.serve.http.host in ("0.0.0.0", "::") else cfg.serve.http.host
    return f"http://{host}:{cfg.serve.http.port}{cfg.serve.route_prefix.rstrip('/')}"


@app.command()
def run(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    engine: Annotated[
        str, typer.Option(help="vllm (generated copy) or none (cached/template copy only, no LLM).")
    ] = "vllm",
) -> None:
    """Deploy the application and keep serving until Ctrl-C; prints the URL and the endpoints."""
    if engine not in ("vllm", "none"):
        typer.echo(f"error: --engine must be 'vllm' or 'none', got {engine!r}", err=True)
        raise typer.Exit(2)
    cfg = load_or_exit(config, set_)
    try:
        url = start_app(cfg, str(config) if config else None, list(set_ or []), engine)
    except Exception as e:  # missing artifacts and the like: say which stage to run
        typer.echo(
            f"error: the application did not start: {e}\nrun `shopgraph demo --exit-after-requests` (or the data/train stages) first",
            err=True,
        )
        raise typer.Exit(1) from None
    print_endpoints(url)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        typer.echo("stopping")


def print_endpoints(url: str) -> None:
    typer.echo(f"\nshopgraph is serving at {url}")
    typer.echo(f'  POST {url}/v1/recommendations       {{"user_id": ..., "k": 10}}')
    typer.echo(f"  GET  {url}/v1/products/<id>/page?user_id=...")
    typer.echo(f"  GET  {url}/shop/products/<id>?user_id=...   (demo page)")
    typer.echo(f"  POST {url}/v1/events, PUT/PATCH/DELETE {url}/v1/products/<id>   (write API: needs an API key,")
    typer.echo("       mint one with `python -m core.store.keys --name demo --scopes admin`; README, Live shop)")
    typer.echo(f"  GET  {url}/docs  (OpenAPI)   {url}/readyz   {url}/metrics")
