"""Options every `shopgraph` command shares, and the one place config errors are reported."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cluster.config import ConfigError, ShopgraphConfig, load_config

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config (default: configs/local.yaml, the one-CPU-node profile).", show_default=False),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override one config key, e.g. --set train.seed=3 (repeatable; the value is YAML).", show_default=False),
]


def load_or_exit(config: Path | None, overrides: list[str] | None) -> ShopgraphConfig:
    """Load the config or stop with exit code 2 and a message that names the key to change."""
    try:
        return load_config(config, overrides)
    except ConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
