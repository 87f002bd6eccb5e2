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
Personal data (`core.pii`: e-mail, phone, card and ID numbers, addresses) never reaches a corpus:
facts are scrubbed where they are made, reference descriptions and the evidence of reasons
(other items' titles) here; the manifest's `stats.pii` counts what was replaced, by kind.
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
from core.facts import attribute_values, clean_text, facts_of, serialize_facts
from core.layout import ArtifactLayout
from core.manifest import staged_dir, write_manifest
from core.pii import scrub_value
from core.runtime import local_dir
from core.schemas import EVENTS, PRODUCTS
from data.inputs import conform, load_events_counted, load_products
from ml.grounding import remove_unsupported
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
from ml.reasons import (
    accept_reason,
    degenerate_description,
    drop_repeats,
    reason_profile,
    reason_variants,
    unbacked_claims,
)


def split_of(product_id: str, eval_fraction: float) -> str:
    """'eval' for a stable eval_fraction of product ids, else 'train' (independent of input order)."""
    bucket = int.from_bytes(hashlib.sha256(product_id.encode("utf-8")).digest()[:8], "big") / 2**64
    return "eval" if bucket < eval_fraction else "train"


def _block(open_tag: str, body: str, close_tag: str) -> str:
    return f"{open_tag}\n{body}\n{close_tag}"


def _json_block(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": ")).replace("<", "\\u003c")


def _value(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def _scrubbed(value: Any, stats: dict) -> Any:
    """`value` with personal data replaced (`core.pii`), what was found counted in stats['pii_<kind>']."""
    counts: Counter = Counter()
    out = scrub_value(value, counts)
    for kind, n in counts.items():
        stats[f"pii_{kind}"] = stats.get(f"pii_{kind}", 0) + n
    return out


def _count_fact_pii(product: Mapping[str, Any], stats: dict) -> None:
    """Count the personal data `facts_of` scrubs from a product's facts (it scrubs them itself)."""
    _scrubbed([clean_text(product.get(k)) for k in ("title", "brand", "category")], stats)
    _scrubbed(list(attribute_values(product.get("attributes")).values()), stats)


def clean_reference(
    description: str | None, facts: Mapping[str, Any], known_brands: list[str], stats: dict | None = None
) -> str | None:
    """A human description as a fine-tuning target, held to what serving shows: sentences with a
    claim the facts do not support are removed (the model must not learn to write what serving
    deletes: unsupported claims, and quality, history or audience claims the facts lack,
    `ml.reasons.unbacked_claims`), so is a repeated sentence; a description with nothing
    publishable left (nothing grounded, or only the title again) is no target at all (the example becomes facts-only). Counted in `stats`."""
    if not description:
        return None
    stats = stats if stats is not None else {}
    from ml.grounding import sentences

    description = _scrubbed(description, stats)

    # human copy is never cut by a token limit: a last sentence without a full stop is kept
    grounded = remove_unsupported(description, facts, known_brands=known_brands)
    kept = drop_repeats("".join(x for x in sentences(grounded) if not unbacked_claims(x, facts))).strip()
    removed = len([x for x in sentences(description) if x.strip()]) - len([x for x in sentences(kept) if x.strip()])
    if removed:
        stats["pdp_sentences_removed"] = stats.get("pdp_sentences_removed", 0) + removed
        stats["pdp_references_trimmed"] = stats.get("pdp_references_trimmed", 0) + 1
    why = "ungrounded" if not kept else degenerate_description(kept, facts, require_end=False)
    if why:
        stats[f"pdp_references_dropped_{why}"] = stats.get(f"pdp_references_dropped_{why}", 0) + 1
        return None
    return kept


def pdp_example(
    product: Mapping[str, Any],
    cfg: CorpusConfig,
    currency: str | None = None,
    *,
    known_brands: list[str] | None = None,
    stats: dict | None = None,
) -> dict[str, Any]:
    facts = facts_of(product, currency)
    serialized = serialize_facts(product, currency)
    if stats is not None:
        _count_fact_pii(product, stats)
    description = clean_reference(clean_text(product.get("description")) or None, facts, known_brands or [], stats)
    reference = {
        "title": facts.get("title", ""),
        "highlights": [f"{k}: {_value(v)}" for k, v in list(facts.get("attributes", {}).items())[: cfg.max_highlights]],
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


def reason_evidence(history: list[str], target: str, by_id: Mapping[str, Mapping[str, Any]], cfg: CorpusConfig):
    """The evidence a ranker would cite for `target` after `history`, in the ranker's format
    (`ml.ranker_features`): a recent item of the same brand or category (it was followed by the
    target), else the shopper's top brand, else top category, else the most recent item."""
    product = by_id[target]
    recent_ids = list(dict.fromkeys(reversed(history)))[: cfg.profile_recent_items]
    for pid in recent_ids:
        if _related(by_id[pid], product):
            return {"type": "because_you_interacted", "product_id": pid, "title": clean_text(by_id[pid]["title"]),
                    "detail": "often bought next"}  # fmt: skip
    brand, category = clean_text(product.get("brand")), clean_text(product.get("category"))
    if brand and brand in _top([clean_text(by_id[p]["brand"]) for p in history], cfg.profile_top_k):
        return {"type": "same_brand", "brand": brand}
    if category and category in _top([clean_text(by_id[p]["category"]) for p in history], cfg.profile_top_k):
        return {"type": "favourite_category", "category": category}
    pid = recent_ids[0]
    return {"type": "because_you_interacted", "product_id": pid, "title": clean_text(by_id[pid]["title"]),
            "detail": "similar product"}  # fmt: skip


def _related(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return any(
        clean_text(a.get(key)) and clean_text(a.get(key)) == clean_text(b.get(key)) for key in ("brand", "category")
    )


def _top(values: list[str], k: int) -> list[str]:
    counts = Counter(v for v in values if v)
    return [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def reason_examples(
    products: pa.Table, events: pa.Table, cfg: CorpusConfig, currency: str | None = None, stats: dict | None = None
) -> list[dict[str, Any]]:
    """One example per user: the user's last event's product is the target, earlier ones the history.

    The prompt holds what serving sends (`ml.reasons.reason_profile` of the evidence a ranker
    would cite), and the reference is one of the prefixed `ml.reasons.reason_variants` (chosen
    by a stable hash of the user): a sentence to "you" naming that evidence, opening with the
    `reason_prefix` that serving prefills. Every reference passes the
    same gate as a served reason (`accept_reason`); one that does not is left out and counted."""
    if cfg.max_reason_examples == 0 or events.num_rows == 0:
        return []
    stats = stats if stats is not None else {}
    by_id = {p["product_id"]: p for p in products.to_pylist()}
    brands = sorted({b for b in (clean_text(p.get("brand")) for p in by_id.values()) if b})
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
        product = by_id[target]
        facts = facts_of(product, currency)
        serialized = serialize_facts(product, currency)
        evidence = _scrubbed(reason_evidence(history, target, by_id, cfg), stats)  # titles of other items
        profile = reason_profile([evidence])
        # the prefixed variants: serving prefills the same opening and the model continues it
        variants = reason_variants([evidence], facts.get("title", ""))[1:]
        sentence = variants[int(hashlib.sha256(user.encode("utf-8")).hexdigest(), 16) % len(variants)]
        kept, why = accept_reason(sentence, facts, profile, known_brands=brands)
        if kept is None:
            stats[f"reasons_rejected_{why}"] = stats.get(f"reasons_rejected_{why}", 0) + 1
            continue
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
) -> dict[str, Any]:
    """Both corpora from PRODUCTS (and EVENTS) tables, in product-id / user-id order, and
    `hygiene`: what the grounding gate removed from the targets (see `clean_reference`)."""
    products = conform(products, PRODUCTS, "products")
    if products.num_rows == 0:
        raise ValueError(
            "the products table is empty: no corpus to build; check the products shard set (`shopgraph data prepare`)"
        )
    products = products.sort_by("product_id")
    stats: dict[str, int] = {}
    brands = sorted({b for b in (clean_text(v) for v in products["brand"].to_pylist()) if b})
    pdp = [pdp_example(p, cfg, currency, known_brands=brands, stats=stats) for p in products.to_pylist()]
    events = conform(events, EVENTS, "events") if events is not None else EVENTS.empty_table()
    reasons = reason_examples(products, events, cfg, currency, stats)
    return {"pdp": pdp, "reasons": reasons, "hygiene": stats}


def write_corpora(layout: ArtifactLayout, corpora: dict[str, Any], cfg: CorpusConfig) -> Path:
    """pdp.jsonl and reasons.jsonl with a manifest of counts and `hygiene` (what the gate removed)."""
    final = local_dir(layout.corpora)
    with staged_dir(final) as staging:
        hygiene = corpora.get("hygiene") or {}
        stats: dict[str, Any] = {
            "hygiene": {k: v for k, v in sorted(hygiene.items()) if not k.startswith("pii_")},
            "pii": {k.removeprefix("pii_"): v for k, v in sorted(hygiene.items()) if k.startswith("pii_")},
        }
        stats["erased"] = int(corpora.get("erased", 0))  # event rows of erased users left out
        for name in ("pdp", "reasons"):
            examples = corpora.get(name, [])
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
    erased = 0
    try:
        events, erased = load_events_counted(layout)  # less the rows of erased users (core.privacy)
    except FileNotFoundError:
        events = None  # a catalog without behaviour still gets its PDP corpus
    corpora = build_corpora(config.data.corpus, products, events, config.data.currency)
    corpora["erased"] = erased
    write_corpora(layout, corpora, config.data.corpus)
    return {
        "pdp": len(corpora["pdp"]),
        "reasons": len(corpora["reasons"]),
        "hygiene": corpora["hygiene"],
        "erased": erased,
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m data.corpus` (a `ray job submit` / RayJob entry point) and its `shopgraph data` command."""
    from core.cli import stage_main

    return stage_main(argv, run, prog="python -m data.corpus", description=__doc__)


if __name__ == "__main__":
    import sys

    sys.exit(main())
