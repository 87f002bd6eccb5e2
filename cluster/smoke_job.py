"""A tiny real Ray job: load the config, run a few Ray tasks, print the result.

    python -m cluster.smoke_job --config configs/local.yaml [--set KEY=VALUE] [--fail]
    shopgraph cluster submit smoke            # the same, as a Ray job

It proves a cluster can run shopgraph code (working_dir upload, imports, config, tasks).
`--fail` raises inside a task, to check that a failed job surfaces its error and exit code.
"""

from __future__ import annotations

import argparse
import sys

import ray

from core.config import ConfigError, load_config
from core.runtime import ensure_ray


@ray.remote(num_cpus=0.25)
def _square(x: int, fail: bool) -> int:
    if fail and x == 3:
        raise RuntimeError("deliberate failure requested with --fail")
    return x * x


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.smoke_job", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="YAML config (default: configs/local.yaml).")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="Override one config key (repeatable)."
    )
    parser.add_argument("--fail", action="store_true", help="Raise inside a Ray task, so the job fails.")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # Inside a Ray job RAY_ADDRESS points at the cluster and this joins it; run by hand it starts
    # a local instance (or joins cluster.ray.address), like every stage.
    ensure_ray(cfg)
    total = sum(ray.get([_square.remote(i, args.fail) for i in range(8)]))
    nodes = len([n for n in ray.nodes() if n["Alive"]])
    print(f"smoke: profile={cfg.profile} sum of squares 0..7 = {total} on {nodes} node(s), Ray {ray.__version__}")
    print(f"smoke: artifacts.root={cfg.artifacts.root} models.dir={cfg.models.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
