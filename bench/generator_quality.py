"""Generator LM quality: base vs fine-tuned on held-out sample products, end to end.

    nice -n 19 .venv/bin/python bench/generator_quality.py --root /tmp/gen-eval \\
        --set train.generator.max_steps=40 --set train.generator.eval.max_examples=50

Runs the real CLI stages on the artifact root `--root`, the way a user does:

1. `shopgraph data prepare`, `data split`, `data corpus` (the embedded sample catalog);
   skipped when `<root>/data/corpora` already holds a committed corpus;
2. `shopgraph train generator` (Ray Train + DeepSpeed SFT from `models.generator`);
3. `shopgraph train eval-generator` on the held-out products (`split == "eval"`, never trained
   on): the PDP task under vLLM structured outputs and the personalized-reason task.

`--skip data train eval` skips stages (e.g. `--skip data train` re-evaluates an existing export).
Every `--set` goes to every stage (one config). Prints one JSON object: per model (base,
fine_tuned) and task: n, ROUGE-L, BLEU, distinct-2, JSON validity (and "complete", i.e. not
cut off by the token budget), unsupported-claim rate overall and mean per output, share of
outputs with an unsupported claim; the fine-tuned minus base deltas; training metrics; wall
seconds per stage and per model's generation (engine start included).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
METRICS = (
    "rougeL",
    "bleu",
    "distinct_2",
    "json_validity",
    "json_complete",
    "unsupported_rate",
    "mean_output_unsupported_rate",
    "outputs_with_unsupported",
)


def shopgraph(*args: str, overrides: list[str], config: str | None) -> float:
    """Run one CLI stage; returns its wall seconds. Output streams to this process's stderr."""
    exe = Path(sys.executable).parent / "shopgraph"
    cmd = [str(exe), *args, *(["--config", config] if config else []), *(x for o in overrides for x in ("--set", o))]
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    started = time.perf_counter()
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        stdout=sys.stderr,
        stderr=sys.stderr,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    if proc.returncode != 0:
        raise SystemExit(f"`shopgraph {' '.join(args)}` failed with exit code {proc.returncode}")
    return time.perf_counter() - started


def summarize(root: Path) -> dict:
    report = json.loads((root / "reports" / "generator" / "eval.json").read_text())
    models = {
        name: {
            "generate_seconds": m.get("generate_seconds"),
            **{task: {"n": t["examples"], **{k: t.get(k) for k in METRICS}} for task, t in m["tasks"].items()},
        }
        for name, m in report["models"].items()
    }
    delta = {}
    if {"base", "fine_tuned"} <= models.keys():
        for task in models["fine_tuned"]:
            if task in models["base"] and isinstance(models["base"][task], dict):
                delta[task] = {
                    k: models["fine_tuned"][task][k] - models["base"][task][k]
                    for k in METRICS
                    if models["base"][task][k] is not None and models["fine_tuned"][task][k] is not None
                }
    return {
        "model_version": report.get("model_version"),
        "settings": report.get("settings"),
        "models": models,
        "fine_tuned_minus_base": delta,
    }


def training(root: Path) -> dict:
    path = root / "models" / "generator" / "training_config.json"
    if not path.is_file():
        return {}
    meta = json.loads(path.read_text())
    hp = meta.get("hyperparameters", {})
    keep = (
        "tasks",
        "max_seq_len",
        "micro_batch_size",
        "grad_accum_steps",
        "epochs",
        "max_steps",
        "lr",
        "warmup_ratio",
        "zero_stage",
        "lora",
    )
    return {
        "hyperparameters": {k: hp.get(k) for k in keep},
        "scaling": meta.get("scaling"),
        "metrics": meta.get("metrics"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, help="Artifact root (artifacts.root) to build and evaluate in.")
    ap.add_argument("--config", default=None, help="YAML config (default: configs/local.yaml).")
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="Config override KEY=VALUE, repeatable; passed to every stage.",
    )
    ap.add_argument("--skip", nargs="*", default=[], choices=["data", "train", "eval"], help="Stages not to run.")
    args = ap.parse_args()

    root = Path(args.root).resolve()
    overrides = [f"artifacts.root={root}", *args.overrides]
    if not any(o.startswith("models.dir=") for o in overrides):
        overrides.append(f"models.dir={REPO / 'models'}")  # the prepared embedded models of this checkout
    wall: dict[str, float] = {}
    if "data" not in args.skip and not (root / "data" / "corpora" / "shopgraph-manifest.json").is_file():
        wall["data"] = sum(
            shopgraph("data", stage, overrides=overrides, config=args.config)
            for stage in ("prepare", "split", "corpus")
        )
    if "train" not in args.skip:
        wall["train"] = shopgraph("train", "generator", overrides=overrides, config=args.config)
    if "eval" not in args.skip:
        wall["eval"] = shopgraph("train", "eval-generator", overrides=overrides, config=args.config)
    corpus = json.loads((root / "data" / "corpora" / "shopgraph-manifest.json").read_text())["meta"]["stats"]
    out = {
        "bench": "generator_quality",
        "root": str(root),
        "overrides": args.overrides,
        "host": {"machine": platform.machine(), "cpus": os.cpu_count()},
        "corpus": corpus,
        "wall_seconds": wall,
        "training": training(root),
        **summarize(root),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
