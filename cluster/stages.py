"""The batch stages of shopgraph, in one table: stage name -> `python -m <module>` entry point.

    shopgraph cluster submit prepare --config configs/local.yaml
    # the same job, submitted with Ray's own CLI:
    ray job submit --working-dir . -- python -m data.prepare --config configs/local.yaml

`shopgraph cluster submit` and the RayJob manifests in k8s/ both read this table. Every
stage module takes `--config PATH` (and `--set KEY=VALUE` overrides, like every shopgraph
command). A stage whose module is not in this checkout yet is refused at submit time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Stage:
    name: str
    module: str
    help: str
    gpu: bool = False  # needs the GPU worker group (vLLM, LM fine-tuning)

    def module_file(self, root: Path = REPO_ROOT) -> Path | None:
        """The file that `python -m <module>` would run from `root`, or None when absent."""
        base = root.joinpath(*self.module.split("."))
        for candidate in (base.with_suffix(".py"), base / "__main__.py"):
            if candidate.is_file():
                return candidate
        return None

    def entrypoint(self, config_path: str, overrides: list[str] | None = None) -> list[str]:
        args = ["python", "-m", self.module, "--config", config_path]
        for item in overrides or []:
            args += ["--set", item]
        return args


STAGES: dict[str, Stage] = {
    s.name: s
    for s in [
        Stage("prepare", "data.prepare", "read raw catalog/events, validate, quarantine, write Parquet shards"),
        Stage("splits", "data.splits", "train/validation/test splits of the event sequences"),
        Stage("corpus", "data.corpus", "SFT corpus for the generator LM"),
        Stage("embed", "data.embed", "text embeddings of every product (MiniLM, Ray Data actor pool)"),
        Stage("index", "data.index", "FAISS index over item vectors"),
        Stage("train-recommender", "train.recommender", "sequential recommender on Ray Train (PyTorch DDP)"),
        Stage("train-ranker", "train.ranker", "ranker over recommender scores and features"),
        Stage("train-sentiment", "train.sentiment", "review sentiment model (scikit-learn, labelled + shop reviews)"),
        Stage("train-generator", "train.generator", "fine-tune the generator LM (DeepSpeed)", gpu=True),
        # The harness lives in cluster/ because it composes train/ (offline metrics) with serve/ (latency probe).
        Stage("evaluate", "cluster.evaluate", "one report: recommender, ranker, generator, serving latency", gpu=True),
        # In train/, not data/: it holds vLLM (data/ stays free of model code); CLI: `shopgraph data generate-content`.
        Stage("generate-content", "train.batch_generate", "batch PDP content generation with vLLM", gpu=True),
        # train.refresh composes data.refresh (embeddings, index, watermark) with the page generator (vLLM).
        Stage(
            "refresh", "train.refresh", "incremental refresh from the online database: embed, index, pages", gpu=True
        ),
        Stage("smoke", "cluster.smoke_job", "tiny Ray task that checks a cluster runs shopgraph jobs"),
    ]
}


class StageError(ValueError):
    """Unknown stage or a stage this checkout cannot run; nothing was submitted."""


def get_stage(name: str, root: Path = REPO_ROOT) -> Stage:
    """Look up a stage and check its module exists in this checkout (before anything is uploaded)."""
    stage = STAGES.get(name)
    if stage is None:
        raise StageError(f"unknown stage '{name}'; choose one of: {', '.join(STAGES)}")
    if stage.module_file(root) is None:
        raise StageError(
            f"stage {name} is not available in this checkout: module {stage.module} not found "
            f"(no {stage.module.replace('.', '/')}.py under {root.name}/); it lands with its component"
        )
    return stage
