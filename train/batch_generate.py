"""Batch PDP content for the whole catalog: Ray Data + vLLM, keyed for serving's cache.

    shopgraph data generate-content --config configs/local.yaml [--max-products N]
    python -m train.batch_generate --config configs/local.yaml          # ray job submit entry point

Reads the products shard set (`shopgraph data prepare`), serializes each product's facts exactly
as the corpus does (`core.facts.serialize_facts`, so `facts_hash` matches the corpus and the
serving cache), generates `{title, highlights, description}` with the exported generator
(`<artifacts>/models/generator`; `--model-dir` for another) under vLLM structured outputs, runs
the grounding filter (ml/grounding.py) and writes Parquet:

    <artifacts>/content/         product_id, facts_hash, model_version, title, highlights,
                                 description, json_valid, json_complete, unsupported_removed,
                                 rejected (why the description is not served; "" = served),
                                 raw, generated_at
                                 + shopgraph-manifest.json

Serving looks content up by (product_id, facts_hash, model_version): a changed fact or a new
model invalidates it.

Why `map_batches` with a callable class and not `ray.data.llm`: Ray's `vLLMEngineProcessorConfig`
(ray/llm/_internal/batch/stages/vllm_engine_stage.py) places each engine on a
`{"GPU": 1, "CPU": 1}` bundle unless `placement_group_config` overrides it, and adds
chat-template / tokenize / detokenize stages of its own; whether that path runs on the vLLM
CPU build has not been verified here. A plain actor holding `vllm.LLM` does run on CPU, uses
the same engine config as evaluation and serving (ml/llm.py), and keeps structured outputs
and the grounding filter in one place. One engine per actor (`content.concurrency`), with
fractional `content.num_cpus` so it schedules on a 2-CPU node.

It lives in train/ because it holds vLLM; the data package stays free of it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ml.grounding import check, ground_pdp
from ml.prompts import parse_pdp, pdp_messages, pdp_structured_outputs, repair_pdp
from ml.reasons import instruction_in_facts, publishable_description, publishable_highlights


def facts_rows(batch: dict[str, np.ndarray], currency: str | None = None) -> dict[str, Any]:
    """Ray Data stage: product rows -> product_id, facts (serialized), facts_hash."""
    import hashlib

    from core.facts import serialize_facts

    n = len(batch["product_id"])
    rows = [{k: batch[k][i] for k in batch} for i in range(n)]
    facts = [serialize_facts(r, currency) for r in rows]
    return {
        "product_id": [str(r["product_id"]) for r in rows],
        "facts": facts,
        "facts_hash": [hashlib.sha256(f.encode("utf-8")).hexdigest() for f in facts],
    }


class PdpGenerator:
    """Holds one vLLM engine; called on batches of facts rows."""

    def __init__(
        self,
        model_dir: str,
        engine: dict[str, Any],
        model_version: str,
        max_new_tokens: int,
        ground: bool,
        known_brands: list[str],
    ):
        from core.config.train import GeneratorEngineConfig
        from ml.prompts import build_structured_vllm

        self.llm = build_structured_vllm(model_dir, GeneratorEngineConfig(**engine))
        self.model_version = model_version
        self.max_new_tokens = max_new_tokens
        self.ground = ground
        self.known_brands = known_brands

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        from vllm import SamplingParams

        params = SamplingParams(
            max_tokens=self.max_new_tokens, temperature=0.0, seed=0, structured_outputs=pdp_structured_outputs()
        )
        facts = [str(f) for f in batch["facts"]]
        outputs = self.llm.chat([pdp_messages(f) for f in facts], params, use_tqdm=False)
        out: dict[str, list[Any]] = {
            k: []
            for k in (
                "title",
                "highlights",
                "description",
                "json_valid",
                "json_complete",
                "unsupported_removed",
                "rejected",
                "raw",
            )
        }
        for f, o in zip(facts, outputs, strict=True):
            raw = o.outputs[0].text
            complete = parse_pdp(raw) is not None
            parsed = repair_pdp(raw)  # closes an answer cut off by max_new_tokens
            content = parsed or {"title": json.loads(f).get("title", ""), "highlights": [], "description": ""}
            removed = 0
            if self.ground and parsed:
                removed = len(
                    check(json.dumps(parsed, ensure_ascii=False), f, known_brands=self.known_brands).unsupported
                )
                content = ground_pdp(parsed, f, known_brands=self.known_brands)
            if self.ground and instruction_in_facts(json.loads(f)):  # serving shows the template for these
                content["description"] = ""
                out["rejected"].append("instruction_in_facts")
            elif self.ground and content["description"]:
                # the gates serving applies: no repeats, no unfinished tail, nothing degenerate ("" = not served)
                content["description"], why = publishable_description(content["description"], json.loads(f))
                content["highlights"] = publishable_highlights(content["highlights"], json.loads(f))
                out["rejected"].append(why or "")
            else:
                out["rejected"].append("" if content["description"] else "ungrounded")
            out["title"].append(content["title"])
            out["highlights"].append(list(content["highlights"]))
            out["description"].append(content["description"])
            out["json_valid"].append(parsed is not None)
            out["json_complete"].append(complete)
            out["unsupported_removed"].append(removed)
            out["raw"].append(raw)
        n = len(facts)
        return {
            "product_id": list(batch["product_id"]),
            "facts_hash": list(batch["facts_hash"]),
            "model_version": [self.model_version] * n,
            **out,
            "generated_at": [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())] * n,
        }


def catalog_brands(products) -> list[str]:
    """Every brand of the catalog: what grounding accepts as a brand name. Serving builds the same
    list from the whole catalog, so the batch job must too, whatever subset it generates for."""
    return sorted({b for b in products.column("brand").to_pylist() if b})


def generate_content(
    cfg,
    *,
    model_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    max_products: int | None = None,
) -> dict[str, Any]:
    """Run the stage; returns counts and the output directory.

    `max_products` (the CLI's --max-products) overrides train.generator.content.max_products.
    """
    import pyarrow.parquet as pq

    from core.layout import ArtifactLayout
    from core.manifest import staged_dir, write_manifest
    from core.runtime import local_dir
    from data.inputs import load_products

    layout = ArtifactLayout(cfg.artifacts.root)
    content = cfg.train.generator.content
    model_dir, model_version = generator_version(model_dir or layout.generator)
    products = load_products(layout).sort_by("product_id")
    brands = catalog_brands(products)  # before the limit: the same brands serving judges a page with
    catalog = products  # precomputed reasons pick popular products from the whole catalog
    limit = max_products or content.max_products
    if limit:
        products = products.slice(0, limit)
    ds = page_dataset(cfg, products, model_dir, model_version, brands)
    final = local_dir(str(out_dir or layout.content))
    with staged_dir(final) as staging:
        table = _collect(ds)
        pq.write_table(table.sort_by("product_id"), staging / "content.parquet")
        reasons = _precompute_reasons(cfg, layout, catalog, str(model_dir.resolve()), model_version, brands, staging)
        stats = {
            "products": table.num_rows,
            "json_valid": float(np.mean(table.column("json_valid").to_numpy(zero_copy_only=False)))
            if table.num_rows
            else 0.0,
            "json_complete": float(np.mean(table.column("json_complete").to_numpy(zero_copy_only=False)))
            if table.num_rows
            else 0.0,
            "unsupported_removed": int(np.sum(table.column("unsupported_removed").to_numpy())) if table.num_rows else 0,
            "rejected": _counts(table.column("rejected").to_pylist()),
            "reasons": reasons,
        }
        write_manifest(
            staging,
            {"stage": "generate-content", "model_dir": str(model_dir), "model_version": model_version, "stats": stats},
        )
    return {"out": str(final), "model_version": model_version, **stats}


def generator_version(model_dir: str | Path) -> tuple[Path, str]:
    """(model dir, model_version) of a committed generator: what content rows are keyed by."""
    from core.manifest import verify_dir

    model_dir = Path(model_dir)
    try:
        manifest = verify_dir(model_dir)
    except Exception as e:
        raise FileNotFoundError(
            f"{e}; train the generator first (`shopgraph train generator`) or pass --model-dir"
        ) from e
    return model_dir, (
        manifest.get("meta", {}).get("model_version")
        or manifest["files"].get("model.safetensors", {}).get("sha256", "")[:12]
        or "unknown"
    )


def page_dataset(cfg, products, model_dir: Path, model_version: str, brands: list[str]):
    """The lazy Ray Data pipeline of page rows for a PRODUCTS table: facts -> vLLM -> grounded pages.
    The whole-catalog job and the incremental refresh (train.refresh) both run this."""
    import ray.data

    from train.recommender import init_ray

    content = cfg.train.generator.content
    init_ray(cfg)
    ds = ray.data.from_arrow(products.select(["product_id", "title", "brand", "category", "price", "attributes"]))
    ds = ds.map_batches(facts_rows, fn_kwargs={"currency": cfg.data.currency}, batch_format="numpy")
    return ds.map_batches(
        PdpGenerator,
        fn_constructor_kwargs={
            "model_dir": str(model_dir.resolve()),
            "engine": cfg.models.engine.model_dump(),
            "model_version": model_version,
            "max_new_tokens": content.max_new_tokens,
            "ground": content.ground,
            "known_brands": brands,
        },  # fmt: skip
        **_engine_actors(content),
    )


def _engine_actors(content) -> dict:
    """`map_batches` options of a vLLM engine actor pool (pages and reasons alike)."""
    return {
        "batch_size": content.batch_size,
        "batch_format": "numpy",
        "concurrency": content.concurrency,
        "num_cpus": content.num_cpus,
        "num_gpus": content.num_gpus or None,
    }


def _precompute_reasons(cfg, layout, catalog, model_dir: str, model_version: str, brands, staging: Path) -> dict:
    """Generated reasons for likely (product, evidence) pairs (train/batch_reasons.py), written
    under `reasons/` (accepted, what serving loads) and `audit/` (rejected, with why and raw)."""
    import pyarrow.parquet as pq
    import ray.data

    from data.inputs import load_events
    from train.batch_reasons import ReasonGenerator, likely_pairs, pair_rows, split_accepted

    content = cfg.train.generator.content
    try:
        events = load_events(layout)
    except FileNotFoundError:
        events = None  # a catalog-only shop: popularity falls back to id order, no co-occurrence
    pairs = likely_pairs(catalog, events, max_products=content.reasons_max_products, anchors=content.reasons_anchors)
    if not pairs:
        return {"pairs": 0, "accepted": 0}
    ds = ray.data.from_arrow(pair_rows(pairs, catalog, cfg.data.currency)).map_batches(
        ReasonGenerator,
        fn_constructor_kwargs={
            "model_dir": model_dir,
            "engine": cfg.models.engine.model_dump(),
            "model_version": model_version,
            "max_new_tokens": content.reason_max_new_tokens,
            "known_brands": brands,
        },  # fmt: skip
        **_engine_actors(content),
    )
    accepted, rejected, stats = split_accepted(_collect(ds))
    (staging / "reasons").mkdir()
    pq.write_table(accepted, staging / "reasons" / "reasons.parquet")
    (staging / "audit").mkdir()
    pq.write_table(rejected, staging / "audit" / "reasons_rejected.parquet")
    return stats


def _counts(values: list) -> dict[str, int]:
    """How many rows were rejected, by reason ("" = served)."""
    out: dict[str, int] = {}
    for v in values:
        if v:
            out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def _collect(ds):
    """Run the pipeline once and gather its (small: one row per product) output on the driver."""
    import pyarrow as pa
    import ray

    tables = [t for t in ray.get(ds.to_arrow_refs()) if t.num_rows]
    if not tables:
        raise ValueError("the products shard set is empty: nothing to generate; run `shopgraph data prepare` first")
    return pa.concat_tables(tables)


def positive_int(text: str) -> int:
    """argparse type of --max-products: a positive integer, or a message naming what was given."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    """`python -m train.batch_generate` (a `ray job submit` / RayJob entry point) and `shopgraph data generate-content`."""
    from core.cli import stage_main

    def options(parser) -> None:
        parser.add_argument(
            "--model-dir", default=None, help="Generator to use (default: <artifacts>/models/generator)."
        )
        parser.add_argument(
            "--max-products",
            type=positive_int,
            default=None,
            metavar="N",
            help="Only the first N products in id order (overrides train.generator.content.max_products; "
            "brands are still taken from the whole catalog).",
        )

    return stage_main(
        argv,
        lambda cfg, model_dir, max_products: generate_content(cfg, model_dir=model_dir, max_products=max_products),
        prog="python -m train.batch_generate",
        description=__doc__,
        options=options,
    )


if __name__ == "__main__":
    import sys

    sys.exit(main())
