"""What the shopper sees: generated pages and reasons after serving's gates, on products the model never trained on.

    .venv/bin/python bench/copy_quality.py --root artifacts [--model-dir DIR] [--products 50] [--myntra 50] \\
        [--skip 0] [--samples samples.jsonl]

Products: the first `--products` held-out products of the sample shop (the corpus's `split ==
"eval"` rows: never trained on) and the first `--myntra` products of the Myntra dev catalog in
`../shared/data/myntra-dev` (`--data-dir`; skipped with a note when absent): real fashion facts
(title, brand, price in INR, gender and colour as attributes) from another shop.

For each product the generator (vLLM, the engine config serving uses) writes a page (PDP JSON
under structured outputs) and one reason per evidence entry (co-occurrence anchor from the
events, brand, category; Myntra: a product of the same brand as the viewed item, brand), and
each goes through exactly the serving code: `serve.generator.ground_page` for pages (falls back
to `serve.content.template_page`), `ml.reasons.accept_reason` for reasons (falls back to
`ml.reasons.template_reason`). Reported per set and source (generated / template):

- pages: share generated; among shown descriptions, the share with zero unsupported claims
  (`ml.grounding.check`) and the share degenerate (`ml.reasons.degenerate_description`);
- reasons: share generated; shown reasons with zero unsupported claims, degenerate, addressed
  to "you", one sentence, faithful (names the primary evidence: `ml.reasons.names_evidence`) —
  for generated and template reasons side by side; why generated ones were rejected.

`--samples` writes every shown text with its facts, evidence, raw output and source, for a hand
review. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def sample_products(root: Path, n: int, skip: int = 0) -> list[dict]:
    """Held-out products of the sample shop (corpus eval split) after the first `skip`, with their facts."""
    from core.facts import parse_facts

    out = []
    with open(root / "data" / "corpora" / "pdp.jsonl", encoding="utf-8") as f:
        for line in f:
            ex = json.loads(line)
            if ex["split"] == "eval":
                if skip > 0:
                    skip -= 1
                    continue
                out.append({"set": "sample", "product_id": ex["product_id"], "facts": parse_facts(ex["facts"])})
            if len(out) == n:
                break
    return out


def myntra_products(data_dir: Path, n: int, skip: int = 0) -> tuple[list[dict], list[str]]:
    """`n` Myntra dev products after the first `skip`, and every brand of that catalog (serving's known brands)."""
    path = data_dir / "myntra-dev" / "myntra_dev3000.csv"
    if not path.is_file() or n <= 0:
        return [], []
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    brands = sorted({r["Product_Brand"].strip() for r in rows if (r.get("Product_Brand") or "").strip()})
    out = []
    for row in rows[skip : skip + n]:
        attrs = {k: v.strip() for k, v in (("gender", row.get("Gender")), ("colour", row.get("Primary_Color"))) if v and v.strip()}  # fmt: skip
        facts = {"title": row["Product_Name"].strip(), "brand": row["Product_Brand"].strip(),
                 "price": float(row["Price"]), "currency": "INR", "attributes": attrs}  # fmt: skip
        out.append({"set": "myntra", "product_id": row["Product_ID"], "facts": facts})
    return out, brands


def sample_evidence(root: Path, products: list[dict]) -> list[str]:
    """Evidence a ranker could cite for each sample product: its most frequent predecessor in the
    events ('often bought next'), its brand, its category. Returns the catalog's brands."""
    from core.layout import ArtifactLayout
    from data.inputs import load_events, load_products
    from train.batch_reasons import likely_pairs

    layout = ArtifactLayout(str(root))
    catalog = load_products(layout)
    try:
        events = load_events(layout)
    except FileNotFoundError:
        events = None
    wanted = {p["product_id"] for p in products}
    subset_pairs = likely_pairs(catalog, events, max_products=catalog.num_rows, anchors=1)
    by_product: dict[str, list[dict]] = {}
    for pair in subset_pairs:
        if pair["product_id"] in wanted:
            by_product.setdefault(pair["product_id"], []).append(pair["evidence"])
    for p in products:
        p["evidence"] = by_product.get(p["product_id"], [])
    return sorted({b for b in catalog["brand"].to_pylist() if b})


def myntra_evidence(products: list[dict]) -> None:
    by_brand: dict[str, list[dict]] = {}
    for p in products:
        by_brand.setdefault(p["facts"]["brand"], []).append(p)
    for p in products:
        ev = [{"type": "same_brand", "brand": p["facts"]["brand"]}]
        other = next((q for q in by_brand[p["facts"]["brand"]] if q is not p), None)
        if other is not None:
            ev.insert(0, {"type": "because_you_interacted", "product_id": other["product_id"],
                          "title": other["facts"]["title"], "detail": "similar product"})  # fmt: skip
        p["evidence"] = ev


def generate(model_dir: str, engine, products: list[dict], page_tokens: int, reason_tokens: int):
    """Pages and reasons as serving asks for them (same prompts, prefilled reason openings,
    greedy decoding with serving's repetition penalty); returns raw texts and seconds."""
    from vllm import SamplingParams

    from ml.prompts import build_structured_vllm, pdp_messages, pdp_structured_outputs, reason_messages
    from ml.reasons import join_continuation, reason_prefix, reason_profile

    llm = build_structured_vllm(model_dir, engine)
    page_params = SamplingParams(
        max_tokens=page_tokens,
        temperature=0.0,
        seed=0,
        repetition_penalty=1.1,
        structured_outputs=pdp_structured_outputs(),
    )
    started = time.perf_counter()
    pages = llm.chat([pdp_messages(p["facts"]) for p in products], page_params, use_tqdm=False)
    page_s = time.perf_counter() - started
    jobs = [(i, e) for i, p in enumerate(products) for e in p["evidence"] if reason_profile([e]) is not None]
    prefixes = [reason_prefix(reason_profile([e]), products[i]["facts"].get("title", "")) for i, e in jobs]
    conversations = [
        reason_messages(reason_profile([e]), products[i]["facts"], x) for (i, e), x in zip(jobs, prefixes, strict=True)
    ]
    reason_params = SamplingParams(max_tokens=reason_tokens, temperature=0.0, seed=0, repetition_penalty=1.1)
    started = time.perf_counter()
    outs = llm.chat(
        conversations, reason_params, use_tqdm=False, add_generation_prompt=False, continue_final_message=True
    )
    reason_s = time.perf_counter() - started
    reasons = [
        (i, e, join_continuation(x, o.outputs[0].text)) for (i, e), x, o in zip(jobs, prefixes, outs, strict=True)
    ]
    del llm  # shut the engine down now, while stdout is redirected: not at exit, after the report
    gc.collect()
    return [o.outputs[0].text for o in pages], reasons, page_s, reason_s


def _share(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def measure(products, page_raw, reason_raw, brands_of: dict[str, list[str]]) -> tuple[dict, list[dict]]:
    from ml.grounding import check, pdp_visible_text
    from ml.reasons import (
        accept_reason,
        addressed,
        degenerate,
        degenerate_description,
        first_sentence,
        names_evidence,
        reason_profile,
        template_reason,
    )
    from serve.content import template_page
    from serve.generator import ground_page

    samples, report = [], {}
    for name in sorted({p["set"] for p in products}):
        idx = [i for i, p in enumerate(products) if p["set"] == name]
        brands = brands_of[name]
        pages = {"generated": [], "template": []}
        why_pages: Counter[str] = Counter()
        for i in idx:
            facts = products[i]["facts"]
            got = ground_page(page_raw[i], facts, brands)
            source = "generated" if got.get("sections") else "template"
            shown = got["sections"] if source == "generated" else template_page(facts)
            if source == "template":
                why_pages[got.get("why", "?")] += 1
            text = pdp_visible_text(shown)
            pages[source].append(
                {
                    "unsupported": bool(check(text, facts, known_brands=brands).unsupported),
                    "degenerate": degenerate_description(shown["description"], facts),
                }  # fmt: skip
            )
            samples.append({"set": name, "kind": "page", "source": source, "product_id": products[i]["product_id"],
                            "facts": facts, "shown": shown, "raw": page_raw[i]})  # fmt: skip
        reasons = {"generated": [], "template": []}
        why_reasons: Counter[str] = Counter()
        for i, ev, raw in (r for r in reason_raw if r[0] in idx):
            facts = products[i]["facts"]
            profile = reason_profile([ev])
            kept, why = accept_reason(raw, facts, profile, known_brands=brands)
            source = "generated" if kept else "template"
            shown = kept or template_reason([ev], facts.get("title", ""))
            if why:
                why_reasons[why] += 1
            sentence, more = first_sentence(shown)
            reasons[source].append(
                {
                    "unsupported": bool(check(shown, facts, known_brands=brands, profile=profile).unsupported),
                    "degenerate": degenerate(shown, facts.get("title")),
                    "you": addressed(shown),
                    "one_sentence": not more,
                    "faithful": names_evidence(shown, [ev]),
                }
            )
            samples.append({"set": name, "kind": "reason", "source": source, "product_id": products[i]["product_id"],
                            "facts": facts, "evidence": ev, "shown": shown, "raw": raw, "why": why})  # fmt: skip
        n_pages = sum(len(v) for v in pages.values())
        n_reasons = sum(len(v) for v in reasons.values())
        all_pages = pages["generated"] + pages["template"]
        all_reasons = reasons["generated"] + reasons["template"]
        report[name] = {
            "products": len(idx),
            "pages": {
                "n": n_pages,
                "generated_share": _share([True] * len(pages["generated"]) + [False] * len(pages["template"])),
                "zero_unsupported_share": _share([not x["unsupported"] for x in all_pages]),
                "degenerate_share": _share([bool(x["degenerate"]) for x in all_pages]),
                "generated_zero_unsupported_share": _share([not x["unsupported"] for x in pages["generated"]]),
                "generated_degenerate_share": _share([bool(x["degenerate"]) for x in pages["generated"]]),
                "fallback_why": dict(why_pages.most_common()),
            },
            "reasons": {
                "n": n_reasons,
                "generated_share": _share([True] * len(reasons["generated"]) + [False] * len(reasons["template"])),
                "zero_unsupported_share": _share([not x["unsupported"] for x in all_reasons]),
                "degenerate_share": _share([bool(x["degenerate"]) for x in all_reasons]),
                **{
                    f"{source}_{metric}": _share([bool(x[metric]) for x in reasons[source]])
                    for source in ("generated", "template")
                    for metric in ("you", "one_sentence", "faithful")
                },
                "rejected_why": dict(why_reasons.most_common()),
            },
        }
    return report, samples


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="artifacts", help="Artifact root of a run (corpora, shards, models/generator).")
    ap.add_argument("--model-dir", default=None, help="Generator (default: <root>/models/generator).")
    ap.add_argument("--products", type=int, default=50, help="Held-out sample-shop products.")
    ap.add_argument("--myntra", type=int, default=50, help="Myntra dev products (0 = none).")
    ap.add_argument("--skip", type=int, default=0,
                    help="Skip the first N products of each set: a fresh set after tuning a gate on the first ones.")  # fmt: skip
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"), help="Shared dev data.")
    ap.add_argument("--page-tokens", type=int, default=384)
    ap.add_argument("--reason-tokens", type=int, default=48)
    ap.add_argument("--samples", default=None, help="Write every shown text as JSONL for a hand review.")
    args = ap.parse_args(argv)

    from core.config import load_config

    root = Path(args.root)
    model_dir = args.model_dir or str(root / "models" / "generator")
    products = sample_products(root, args.products, args.skip)
    brands_of = {"sample": sample_evidence(root, products)}
    myntra, brands_of["myntra"] = myntra_products(Path(args.data_dir), args.myntra, args.skip)
    myntra_evidence(myntra)
    products += myntra
    if not products:
        print(json.dumps({"error": f"no products: no corpus under {root} and no Myntra data in {args.data_dir}"}))
        return 2
    engine = load_config(None, []).models.engine
    import os

    saved = os.dup(1)
    os.dup2(2, 1)  # the engine (and its subprocess) logs to stdout: keep stdout for the JSON report
    try:
        page_raw, reason_raw, page_s, reason_s = generate(
            model_dir, engine, products, args.page_tokens, args.reason_tokens
        )
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
    report, samples = measure(products, page_raw, reason_raw, brands_of)
    if args.samples:
        with open(args.samples, "w", encoding="utf-8") as f:
            for s in samples:
                f.write(json.dumps(s, ensure_ascii=False) + "\n")
    print(json.dumps({"model_dir": model_dir, "seconds": {"pages": round(page_s, 1), "reasons": round(reason_s, 1)},
                      **report}, indent=2, ensure_ascii=False))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
