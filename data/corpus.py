"""Fine-tuning corpora for the generator LM: PDP sections and personalized reasons.

    python -m data.corpus --config configs/local.yaml      # same as `shopgraph data corpus`

Writes under `layout.corpora`, committed with a manifest:

- `pdp.jsonl`: product facts -> {"title", "highlights", "description"} as JSON. The reference
  description is the catalog's human-written `description`; products without one become
  facts-only examples (`has_reference: false`, no assistant turn) for prompting or eval only.
- `reasons.jsonl`: user profile (recent items, top categories/brands) + product facts -> one
  sentence. The reference is a template filled from the facts and the profile evidence, so it
  is grounded by construction but not human-written (`templated: true`).

Facts are serialized deterministically (`core.facts.serialize_facts`): fixed key order, attributes sorted,
NFC-normalized whitespace-collapsed text, prices rounded to cents, Unicode kept (`材质=牛仔布`
stays readable). `facts_hash` (sha256 of that string) keys grounding checks and content caches.

Prompt injection: catalog text only ever appears inside a `<facts>` (or `<profile>`) block of
the user turn, as JSON whose `<` is escaped, so catalog text can neither close the
block nor reach the system turn; the system turn says the block is data, not instructions.
The train/eval split is a stable hash of product_id, shared by both corpora, so an eval
product is never seen in training by either task.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from core.config.data import CorpusConfig
from core.facts import clean_text, facts_of, serialize_facts
from core.layout import ArtifactLayout
from core.manifest import staged_dir, write_manifest
from core.runtime import local_dir
from core.schemas import EVENTS, PRODUCTS
from data.inputs import conform, load_events, load_products
from ml.prompts import (
    FACTS_CLOSE,
    FACTS_OPEN,
    PDP_SYSTEM,
    PDP_TASK,
    PROFILE_CLOSE,
    PROFILE_OPEN,
    REASON_SYSTEM,
    REASON_TASK,
)


def split_of(product_id: str, eval_fraction: float) -> str:
    """'eval' for a stable eval_fraction of product ids, else 'train' (independent of input order)."""
    bucket = int.from_bytes(hashlib.sha256(product_id.encode("utf-8")).digest()[:8], "big") / 2**64
    return "eval" if bucket < eval_fraction else "train"


def _block(open_tag: str, body: str, close_tag: str) -> str:
    return f"{open_tag}\n{body}\n{close_tag}"


def _json_block(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": ")).replace("<", "\\u003c")


def pdp_example(product: Mapping[str, Any], cfg: CorpusConfig, currency: str | None = None) -> dict[str, Any]:
    facts = facts_of(product, currency)
    serialized = serialize_facts(product, currency)
    description = clean_text(product.get("description")) or None
    reference = {
        "title": facts.get("title", ""),
        "highlights": [f"{k}: {v}" for k, v in list(facts.get("attributes", {}).items())[: cfg.max_highlights]],
        "description": description,
    }
    messages = [
        {"role": "system", "content": PDP_SYSTEM},
        {"role": "user", "content": f"{PDP_TASK}\n{_block(FACTS_OPEN, serialized, FACTS_CLOSE)}"},
    ]
    if description:
        messages.append({"role": "assistant", "content": json.dumps(reference, ensure_ascii=False)})
    pid = str(product["product_id"])
    return {
        "id": f"pdp:{pid}",
        "task": "pdp",
        "product_id": pid,
        "messages": messages,
        "facts": serialized,
        "facts_hash": hashlib.sha256(serialized.encode("utf-8")).hexdigest(),
        "reference": reference,
        "has_reference": description is not None,
        "templated": False,
        "split": split_of(pid, cfg.eval_fraction),
    }


def _leaf(category: str) -> str:
    return category.split(">")[-1].strip()


def reason_reference(
    facts: Mapping[str, Any], profile: Mapping[str, Any], related_recent: str | None = None
) -> tuple[str, dict[str, str]]:
    """One templated sentence from the strongest evidence the profile holds for this product.

    Order: a top brand of the user, a top category, a recent item of the same brand or
    category (`related_recent`), else the most recent item.
    """
    title = facts.get("title", "this product")
    brand, category = facts.get("brand"), facts.get("category")
    if brand and brand in profile["top_brands"]:
        return f"Since you often choose {brand}, the {title} is a natural next pick.", {"kind": "brand", "value": brand}
    if category and category in profile["top_categories"]:
        return f"You have been exploring {_leaf(category)}, and the {title} fits right in.", {
            "kind": "category",
            "value": category,
        }
    if related_recent:
        return f"It goes well with the {related_recent} you looked at recently: the {title}.", {
            "kind": "related_item",
            "value": related_recent,
        }
    recent = profile["recent_items"][0]
    return f"Because you recently looked at the {recent}, you may also like the {title}.", {
        "kind": "recent_item",
        "value": recent,
    }


def _related(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return any(
        clean_text(a.get(key)) and clean_text(a.get(key)) == clean_text(b.get(key)) for key in ("brand", "category")
    )


def _top(values: list[str], k: int) -> list[str]:
    counts = Counter(v for v in values if v)
    return [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def reason_examples(
    products: pa.Table, events: pa.Table, cfg: CorpusConfig, currency: str | None = None
) -> list[dict[str, Any]]:
    """One example per user: the user's last event's product is the target, earlier ones the profile."""
    if cfg.max_reason_examples == 0 or events.num_rows == 0:
        return []
    by_id = {p["product_id"]: p for p in products.to_pylist()}
    known = events.filter(pc.is_in(events["product_id"], value_set=products["product_id"]))
    rows = known.select(["user_id", "product_id", "ts"]).append_column("row", pa.array(range(known.num_rows)))
    rows = rows.sort_by([("user_id", "ascending"), ("ts", "ascending"), ("row", "ascending")])
    per_user: dict[str, list[str]] = {}
    for user, pid in zip(rows["user_id"].to_pylist(), rows["product_id"].to_pylist(), strict=True):
        per_user.setdefault(user, []).append(pid)
    out = []
    for user in sorted(per_user):
        history, target = per_user[user][:-1], per_user[user][-1]
        history = [p for p in history if p != target]  # evidence must be other items
        if not history:
            continue
        recent = list(dict.fromkeys(clean_text(by_id[p]["title"]) for p in reversed(history)))[
            : cfg.profile_recent_items
        ]
        profile = {
            "recent_items": recent,
            "top_categories": _top([clean_text(by_id[p]["category"]) for p in history], cfg.profile_top_k),
            "top_brands": _top([clean_text(by_id[p]["brand"]) for p in history], cfg.profile_top_k),
        }
        product = by_id[target]
        facts = facts_of(product, currency)
        serialized = serialize_facts(product, currency)
        # Only an item the prompt shows: a reference citing one the model cannot see teaches it to invent items.
        related = next(
            (
                t
                for p in reversed(history)
                if (t := clean_text(by_id[p]["title"])) in recent and _related(by_id[p], product)
            ),
            None,
        )
        sentence, evidence = reason_reference(facts, profile, related)
        user_msg = f"{REASON_TASK}\n{_block(PROFILE_OPEN, _json_block(profile), PROFILE_CLOSE)}\n{_block(FACTS_OPEN, serialized, FACTS_CLOSE)}"
        out.append(
            {
                "id": f"reason:{user}:{target}",
                "task": "reason",
                "user_id": user,
                "product_id": target,
                "messages": [
                    {"role": "system", "content": REASON_SYSTEM},
                    {"role": "user", "content": user_msg},
                    {"role": "assistant", "content": sentence},
                ],
                "profile": profile,
                "facts": serialized,
                "facts_hash": hashlib.sha256(serialized.encode("utf-8")).hexdigest(),
                "reference": sentence,
                "evidence": evidence,
                "has_reference": True,
                "templated": True,
                "split": split_of(target, cfg.eval_fraction),
            }
        )
        if len(out) == cfg.max_reason_examples:
            break
    return out


def build_corpora(
    cfg: CorpusConfig, products: pa.Table, events: pa.Table | None, currency: str | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Both corpora from PRODUCTS (and EVENTS) tables, in product-id / user-id order."""
    products = conform(products, PRODUCTS, "products")
    if products.num_rows == 0:
        raise ValueError(
            "the products table is empty: no corpus to build; check the products shard set (`shopgraph data prepare`)"
        )
    products = products.sort_by("product_id")
    pdp = [pdp_example(p, cfg, currency) for p in products.to_pylist()]
    events = conform(events, EVENTS, "events") if events is not None else EVENTS.empty_table()
    return {"pdp": pdp, "reasons": reason_examples(products, events, cfg, currency)}


def write_corpora(layout: ArtifactLayout, corpora: dict[str, list[dict[str, Any]]], cfg: CorpusConfig) -> Path:
    final = local_dir(layout.corpora)
    with staged_dir(final) as staging:
        stats = {}
        for name, examples in corpora.items():
            with open(staging / f"{name}.jsonl", "w", encoding="utf-8") as f:
                for ex in examples:
                    f.write(json.dumps(ex, ensure_ascii=False) + "\n")
            stats[name] = {
                "examples": len(examples),
                "eval": sum(ex["split"] == "eval" for ex in examples),
                "with_reference": sum(ex["has_reference"] for ex in examples),
            }
        write_manifest(staging, {"stage": "corpus", "config": cfg.model_dump(mode="json"), "stats": stats})
    return final


def run(config) -> dict[str, Any]:
    """The `shopgraph data corpus` stage: products + events from the layout -> JSONL corpora."""
    layout = ArtifactLayout(config.artifacts.root)
    products = load_products(layout)
    try:
        events = load_events(layout)
    except FileNotFoundError:
        events = None  # a catalog without behaviour still gets its PDP corpus
    corpora = build_corpora(config.data.corpus, products, events, config.data.currency)
    write_corpora(layout, corpora, config.data.corpus)
    return {name: len(examples) for name, examples in corpora.items()}


def main(argv: list[str] | None = None) -> int:
    """`python -m data.corpus` (a `ray job submit` / RayJob entry point) and its `shopgraph data` command."""
    from core.cli import stage_main

    return stage_main(argv, run, prog="python -m data.corpus", description=__doc__)


if __name__ == "__main__":
    import sys

    sys.exit(main())
