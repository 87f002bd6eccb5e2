"""Precomputed recommendation reasons for likely (product, evidence) pairs, so serving shows
generated reasons without generating on the request path.

Part of `shopgraph data generate-content` (train/batch_generate.py runs it after the pages):

    <artifacts>/content/reasons/reasons.parquet    product_id, key, model_version, facts_hash, text
    <artifacts>/content/audit/reasons_rejected.parquet   ... and why / raw for the rejected ones

A reason is a pure function of (product facts, primary evidence) (`ml.reasons`), so it can be
computed ahead for the evidence a ranker is likely to cite:

- the most popular products (by event count; id order for a catalog without events), each with
  - `same_brand` (its brand) and `favourite_category` (its category), shown to any shopper whose
    history makes the ranker cite them;
  - `because_you_interacted` ("often bought next") for the items users most often viewed just
    before it: the ranker's co-occurrence evidence.

Every output passes `ml.reasons.accept_reason` (one sentence to "you", naming the evidence,
grounded, nothing unknown, not degenerate) before it is written; serving loads the accepted
ones into its cache under `CacheKey(product_id, "reason", reason_key(evidence), model_version,
facts_hash)` and re-checks nothing: the gate is the same code.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa

from ml.reasons import accept_reason, join_continuation, reason_key, reason_prefix, reason_profile


def likely_pairs(products: pa.Table, events: pa.Table | None, *, max_products: int, anchors: int) -> list[dict]:
    """[{product_id, evidence}] for the `max_products` most popular products (see module doc)."""
    if max_products <= 0 or products.num_rows == 0:
        return []
    rows = {r["product_id"]: r for r in products.select(["product_id", "title", "brand", "category"]).to_pylist()}
    popularity: Counter[str] = Counter()
    follows: dict[str, Counter[str]] = {}
    if events is not None and events.num_rows:
        ev = events.select(["user_id", "product_id", "ts"]).sort_by([("user_id", "ascending"), ("ts", "ascending")])
        users, items = ev["user_id"].to_pylist(), ev["product_id"].to_pylist()
        popularity.update(p for p in items if p in rows)
        for i in range(1, len(items)):
            prev, cur = items[i - 1], items[i]
            if users[i] == users[i - 1] and prev != cur and prev in rows and cur in rows:
                follows.setdefault(cur, Counter())[prev] += 1
    order = sorted(rows, key=lambda pid: (-popularity[pid], pid))[:max_products]
    out = []
    for pid in order:
        row = rows[pid]
        for prev, _ in sorted((follows.get(pid) or {}).items(), key=lambda kv: (-kv[1], kv[0]))[:anchors]:
            out.append(
                {
                    "product_id": pid,
                    "evidence": {
                        "type": "because_you_interacted",
                        "product_id": prev,
                        "title": rows[prev]["title"],
                        "detail": "often bought next",
                    },
                }
            )
        if row.get("brand"):
            out.append({"product_id": pid, "evidence": {"type": "same_brand", "brand": row["brand"]}})
        if row.get("category"):
            out.append({"product_id": pid, "evidence": {"type": "favourite_category", "category": row["category"]}})
    return out


class ReasonGenerator:
    """Holds one vLLM engine; called on batches of (facts, evidence) rows."""

    def __init__(self, model_dir: str, engine: dict[str, Any], model_version: str, max_new_tokens: int, known_brands):
        from core.config.train import GeneratorEngineConfig
        from ml.prompts import build_structured_vllm

        self.llm = build_structured_vllm(model_dir, GeneratorEngineConfig(**engine))
        self.model_version = model_version
        self.max_new_tokens = max_new_tokens
        self.known_brands = list(known_brands)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        from vllm import SamplingParams

        from ml.prompts import reason_messages

        facts = [json.loads(str(f)) for f in batch["facts"]]
        evidence = [json.loads(str(e)) for e in batch["evidence"]]
        profiles = [reason_profile([e]) for e in evidence]
        prefixes = [reason_prefix(p, str(f.get("title") or "")) for p, f in zip(profiles, facts, strict=True)]
        params = SamplingParams(max_tokens=self.max_new_tokens, temperature=0.0, seed=0, repetition_penalty=1.1)
        conversations = [reason_messages(p, f, x) for p, f, x in zip(profiles, facts, prefixes, strict=True)]
        # every pair has evidence, so every conversation ends in a prefilled turn the engine continues
        outputs = self.llm.chat(
            conversations, params, use_tqdm=False, add_generation_prompt=False, continue_final_message=True
        )
        texts, why, raw = [], [], []
        for f, p, x, o in zip(facts, profiles, prefixes, outputs, strict=True):
            text = join_continuation(x, o.outputs[0].text)
            kept, rejected = accept_reason(text, f, p, known_brands=self.known_brands)
            texts.append(kept or "")
            why.append(rejected or "")
            raw.append(text)
        n = len(facts)
        return {
            "product_id": [str(x) for x in batch["product_id"]],
            "key": [reason_key([e]) for e in evidence],
            "model_version": [self.model_version] * n,
            "facts_hash": [str(x) for x in batch["facts_hash"]],
            "text": texts,
            "rejected": why,
            "raw": raw,
        }


def pair_rows(pairs: list[dict], products: pa.Table, currency: str | None) -> pa.Table:
    """The generator's input rows: product_id, facts (serialized as the corpus does), facts_hash, evidence."""
    from core.facts import serialize_facts

    by_id = {r["product_id"]: r for r in products.to_pylist()}
    facts = [serialize_facts(by_id[p["product_id"]], currency) for p in pairs]
    return pa.table(
        {
            "product_id": [p["product_id"] for p in pairs],
            "facts": facts,
            "facts_hash": [hashlib.sha256(f.encode("utf-8")).hexdigest() for f in facts],
            "evidence": [json.dumps(p["evidence"], ensure_ascii=False, sort_keys=True) for p in pairs],
        }
    )


def split_accepted(table: pa.Table) -> tuple[pa.Table, pa.Table, dict[str, int]]:
    """(accepted rows in serving's columns, rejected rows with why and raw, counts by outcome)."""
    import pyarrow.compute as pc

    ok = pc.not_equal(table["rejected"], "")
    rejected = table.filter(ok)
    accepted = table.filter(pc.invert(ok)).select(["product_id", "key", "model_version", "facts_hash", "text"])
    counts = Counter(table["rejected"].to_pylist())
    stats = {"pairs": table.num_rows, "accepted": accepted.num_rows}
    stats.update({f"rejected_{k}": v for k, v in sorted(counts.items()) if k})
    return accepted.sort_by([("product_id", "ascending"), ("key", "ascending")]), rejected, stats
