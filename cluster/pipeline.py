"""The whole product on one machine: data -> train -> index -> serve, as `shopgraph demo` runs it.

    shopgraph demo                       # then keeps serving until Ctrl-C
    shopgraph demo --exit-after-requests # CI / scripted runs

Each stage is the same function its CLI command and `ray job submit` entry point call. A stage
is skipped only when its committed outputs verify (core.manifest) and the build record in its
manifest matches what this run would build from: the config keys the stage reads, the content
digests of the committed directories it reads, and the shopgraph version (cluster.fingerprint).
Otherwise it reruns and says why (`data prepare  rebuilding: data.sources changed`); a rerun
changes its outputs' digests, so the stages that read them rerun too. Serving keys (`serve.*`)
and placement keys (`cluster.*`) are in no stage's record. `--fresh` rebuilds everything.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.layout import ArtifactLayout


@dataclass(frozen=True)
class Stage:
    """One pipeline stage and what its result depends on."""

    name: str
    run: Callable[[Any], Any]
    outputs: tuple[str, ...]  # committed directories it writes; the first holds the build record
    config: tuple[str, ...]  # dotted config keys whose values change its result
    inputs: dict[str, str]  # committed directories it reads, by the name a message shows
    reads_sources: bool = False  # also reads the raw files of data.sources


def stages(cfg) -> list[Stage]:
    """Every stage in dependency order, with its outputs, config keys and inputs."""
    from data import corpus, embed, index, splits
    from data.prepare import prepare
    from ml.encoder import resolve_encoder_dir
    from train.ranker import train_ranker
    from train.recommender import train_recommender
    from train.sentiment import train_sentiment

    layout = ArtifactLayout(cfg.artifacts.root)

    def read(*paths: str) -> dict[str, str]:  # named by their place under the artifact root
        return {p.removeprefix(layout.root.rstrip("/") + "/"): p for p in paths}

    encoder = {f"models.encoder ({cfg.models.encoder})": str(resolve_encoder_dir(cfg.models.dir, cfg.models.encoder))}
    # The DDP shape changes the result; the protocol keys the recipes read shape their metrics
    # (not the rest of train.evaluation, which sizes `shopgraph train evaluate`).
    protocol = ("train.evaluation.ks", "train.evaluation.num_negatives", "train.evaluation.max_users")
    trained = ("train.seed", "train.scaling", *protocol)
    return [
        Stage(
            "data prepare",
            lambda c: prepare(c, log=lambda *a, **k: None),
            (layout.events, layout.products, layout.quarantine),
            ("data.sources", "data.sample", "data.prepare", "data.seed", "data.currency"),
            {},
            reads_sources=True,
        ),
        Stage(
            "data split",
            splits.run,
            (layout.splits, layout.id_maps, layout.sequences, layout.features),
            ("data.splits",),
            read(layout.events),
        ),
        Stage(
            "data corpus",
            corpus.run,
            (layout.corpora,),
            ("data.corpus", "data.currency"),
            read(layout.products, layout.events),
        ),
        Stage(
            "data embed-products",
            embed.run,
            (layout.embeddings,),
            ("data.embedding", "models.encoder"),
            {**read(layout.products, layout.id_maps), **encoder},
        ),
        Stage("data index", index.run, (layout.index,), ("data.index", "data.seed"), read(layout.embeddings)),
        Stage(
            "train recommender",
            train_recommender,
            (layout.recommender,),
            ("train.recommender", *trained),
            read(layout.splits, layout.id_maps, layout.products),
        ),
        Stage(
            "train ranker",
            train_ranker,
            (layout.ranker,),
            ("train.ranker", *trained),
            read(
                layout.recommender, layout.splits, layout.id_maps, layout.features, layout.embeddings, layout.products
            ),
        ),
        Stage(
            "train sentiment",
            lambda c: train_sentiment(c, log=lambda *a, **k: None, allow_empty=True),
            (layout.sentiment, layout.review_summaries),
            ("train.sentiment", "train.seed", "models.encoder"),
            {**read(layout.events), **encoder},
        ),
    ]


def shopgraph_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("shopgraph")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def source_digests(cfg) -> dict[str, str]:
    """Each raw source's files by path, size and modification time (not content: raw dumps run to gigabytes)."""
    import hashlib

    from cluster.fingerprint import canonical_json
    from data.sources import SourceError, resolve_files

    digests = {}
    for i, src in enumerate(cfg.data.sources):
        if src.format == "sql":  # the online database: its row counts and latest writes
            digests[f"source {src.name}"] = _database_digest(cfg, src)
            continue
        try:
            listing = []
            for fs, path in resolve_files(src, i):
                info = fs.info(path)
                modified = info.get("mtime") or info.get("LastModified") or info.get("updated") or ""
                listing.append([path, info.get("size"), str(modified)])
            digests[f"source {src.name}"] = hashlib.sha256(canonical_json(listing).encode()).hexdigest()
        except (SourceError, OSError):  # prepare itself says what to fix
            digests[f"source {src.name}"] = "missing"
    return digests


def _database_digest(cfg, src) -> str:
    import hashlib

    from core.store import database_url
    from data.sqlsource import state

    try:
        text = state(src, src.url or database_url(cfg), cfg.online.password_env)
    except Exception:  # unreachable or unmigrated: prepare itself says what to fix
        return "missing"
    return hashlib.sha256(text.encode()).hexdigest()


def build_record_of(stage: Stage, cfg) -> dict[str, Any]:
    """What `stage` would be built from now: its config values, input digests and the version."""
    from cluster.fingerprint import build_record, config_parts
    from core.manifest import IncompleteDirError, files_digest, verify_dir

    inputs = {}
    for name, path in stage.inputs.items():
        try:
            inputs[name] = files_digest(verify_dir(Path(path)))
        except IncompleteDirError:  # the stage itself will fail and say which stage to run
            inputs[name] = "missing"
    if stage.reads_sources:
        inputs.update(source_digests(cfg))
    return build_record(config_parts(cfg.model_dump(mode="json"), stage.config), inputs, shopgraph_version())


def stale_reasons(stage: Stage, record: dict[str, Any]) -> list[str]:
    """Why `stage` must run; [] when its outputs verify and were built from `record`."""
    from cluster.fingerprint import stale_reasons as differ
    from core.manifest import IncompleteDirError, verify_dir

    manifest: dict[str, Any] = {}
    for output in stage.outputs:
        if not Path(output).exists():
            return ["not built yet"]
        try:
            manifest = manifest or verify_dir(Path(output))  # the first output holds the record
        except IncompleteDirError as e:
            return [f"incomplete output ({e})"]
    return differ(manifest.get("build"), record)


def run_pipeline(
    cfg,
    *,
    fresh: bool = False,
    echo: Callable[[str], None] = print,
    progress: Callable[[str], AbstractContextManager[Any]] | None = None,
) -> dict[str, float]:
    """Run every stage that is stale (or all with `fresh`); returns seconds per stage run.

    `echo` gets one line per stage (up to date / rebuilding: why / done in); `progress(name)`,
    if given, wraps each stage run (the demo shows an elapsed-time ticker with it).
    """
    from core.manifest import record_build
    from core.runtime import ensure_ray

    ensure_ray(cfg)
    timings: dict[str, float] = {}
    for stage in stages(cfg):
        record = build_record_of(stage, cfg)
        reasons = ["--fresh"] if fresh else stale_reasons(stage, record)
        if not reasons:
            echo(f"  {stage.name:22s} up to date ({stage.outputs[0]})")
            continue
        echo(f"  {stage.name:22s} rebuilding: {'; '.join(reasons)}")
        started = time.perf_counter()
        with progress(stage.name) if progress else contextlib.nullcontext():
            stage.run(cfg)
        record_build(Path(stage.outputs[0]), record)
        timings[stage.name] = time.perf_counter() - started
        echo(f"  {stage.name:22s} done in {timings[stage.name]:.1f}s")
    return timings
