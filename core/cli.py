"""How every shopgraph entry point reads its config and reports errors: one idiom for all.

    python -m data.splits --config configs/local.yaml --set data.seed=3   # a stage's main(argv)
    shopgraph data split --config configs/local.yaml --set data.seed=3    # the CLI calls the same main

Each stage module exposes `main(argv) -> int` built on `stage_main`: argparse for `--config`,
`--set` and the stage's own options, the config loaded and validated once, the stage's run
function called, its summary printed, and exit codes decided here: 0 done, 1 the stage's inputs
are missing or wrong (the message says which command to run first), 2 a config or usage error
(the message names the key to change). The typer CLI builds the same argv (`stage_argv`) and
calls that `main`, so `python -m`, `ray job submit`, the RayJobs and the CLI run one code path.
No stage imports a CLI.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from core.config import ConfigError, ShopgraphConfig, load_config
from core.manifest import IncompleteDirError

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="YAML config (default: configs/local.yaml, the one-CPU-node profile).",
        show_default=False,
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override one config key, e.g. --set train.seed=3 (repeatable; the value is YAML).",
        show_default=False,
    ),
]

# A stage whose inputs are missing or malformed raises one of these; anything else is a bug and keeps its traceback.
INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, IncompleteDirError)


def load_or_exit(config: Path | None, overrides: list[str] | None) -> ShopgraphConfig:
    """Load the config or stop with exit code 2 and a message that names the key to change."""
    try:
        return load_config(config, overrides)
    except ConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


def as_json(result: Any) -> str | None:
    """A stage's summary as indented JSON (None prints nothing)."""
    return None if result is None else json.dumps(result, indent=2, ensure_ascii=False, default=str)


def stage_main(
    argv: list[str] | None,
    run: Callable[..., Any],
    *,
    prog: str,
    description: str,
    options: Callable[[argparse.ArgumentParser], None] | None = None,
    show: Callable[[Any], str | None] = as_json,
    input_errors: tuple[type[BaseException], ...] = INPUT_ERRORS,
    usage_errors: tuple[type[BaseException], ...] = (),
    hint: str = "",
) -> int:
    """Parse `argv`, load the config, call `run(cfg, **stage_options)` and return the exit code.

    `input_errors` exit 1 with "error: <message><hint>"; `usage_errors` (and config errors)
    exit 2. `show` turns the run's result into what is printed on stdout.
    """
    parser = argparse.ArgumentParser(
        prog=prog, description=description.strip().splitlines()[0] if description else None
    )
    parser.add_argument("--config", "-c", type=Path, default=None, help="YAML config (default: configs/local.yaml).")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="Override one config key, e.g. --set train.seed=3 (repeatable; the value is YAML).",
    )  # fmt: skip
    if options is not None:
        options(parser)
    args = vars(parser.parse_args(argv))
    config, overrides = args.pop("config"), args.pop("overrides")
    try:
        cfg = load_config(config, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        result = run(cfg, **args)
    except usage_errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except input_errors as e:
        print(f"error: {e}{hint}", file=sys.stderr)
        return 1
    text = show(result)
    if text:
        print(text)
    return 0


def stage_argv(config: Path | None, overrides: list[str] | None, **options: Any) -> list[str]:
    """The argv a stage's `main` takes, from the CLI's typed options (None options are left out)."""
    argv = ["--config", str(config)] if config is not None else []
    for item in overrides or []:
        argv += ["--set", item]
    for name, value in options.items():
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv
