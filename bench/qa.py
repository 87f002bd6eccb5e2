"""Grounded product Q&A on real catalogs: answer accuracy, abstention and unsupported claims, per
language, with the answerer that serving runs (`ml.qa.plan_answer`). Prints one JSON object.

    PYTHONPATH=. .venv/bin/python bench/qa.py [--data-dir ../shared/data] [--models-dir models] [--seed 0]
        [--generate 0]

Data (read from `--data-dir`, default `$SHOPGRAPH_SHARED_DIR/data` else ../shared/data; never
copied into the repository), read with `data.readers` as `data prepare` reads them:
- English: `myntra-dev/myntra_dev3000.csv` (csv; facts: title, brand, price INR, colour, gender).
- Chinese: `advertisegen-dev/advertisegen_dev300.json` (the `类型#裤*材质#牛仔布` attribute catalog).
- Reviews: `reviews-dev/`: the 衣服 (clothing) reviews of `online_shopping_10_cats_dev10000.csv`, eight
  to a product, go to AdvertiseGen products (clothing); the 500 Amazon phone-review sentences
  (`amazon_cells_labelled_dev500.txt`), ten to a product, make 50 English review-only products
  ("Amazon phone product <k>": a title and a category, no attributes). Summaries per product are
  `ml.aspects.summarize` with the sentiment model (`ml.sentiment`, TF-IDF heads) fitted on these files.

Questions, built from the catalog with several phrasings per concept in each language (some with
no cue word, which only the encoder can place): `fact` (the product has the attribute: the
answer must cite it and state its value), `review` (only the review summary speaks to it: it
must cite that aspect), `none` (neither the facts nor the reviews do: the answer must be the
abstention). Products are split in two halves by a seeded shuffle: the encoder's similarity
threshold is chosen on the `tune` half (the highest mean of accuracy and abstention F1 over both
languages) and every figure is reported on the other half.

Figures per language: `answer_accuracy` (correct answers / fact and review questions),
`abstention` precision and recall (`none` questions abstained / all abstentions, / all `none`
questions), `unsupported_claim_rate` (answers with a claim `ml.grounding.check` does not find in
the answer's evidence / answers; claim-level too), `wrong_answers` (answered with something the
question did not ask for). Targets: abstention recall >= 0.9, unsupported claims <= 2% of answers.
`--generate N` also runs the real generator (vLLM, the configured model) on N answerable
questions per language of the report half, through `GeneratorCore.stream_answer`: how many
answers survive grounding, how many sentences it drops, and the served text's unsupported rate.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.facts import facts_of  # noqa: E402
from ml.qa import QuestionMatcher, concept_of_key, plan_answer  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("SHOPGRAPH_SHARED_DIR", REPO.parent / "shared")) / "data"

# Phrasings per concept: "{v}" is the product's value (a yes/no question that names it).
EN_FACT = {
    "color": ["What colour is this?", "Which color does it come in?", "Tell me the colour of this item.", "Is it {v}?",
              "What shade is it?"],
    "gender": ["Is this for men or women?", "Which gender is this made for?", "Is it a unisex item?",
               "Who is this meant for, him or her?"],
    "brand": ["Which brand is this?", "Who makes this?", "What's the brand name?", "Which company produces it?"],
    "price": ["How much does it cost?", "What is the price?", "How much is this?", "What would I pay for it?"],
    "type": ["What kind of product is this?", "What type of item is this?", "What exactly am I looking at here?"],
}  # fmt: skip
EN_NONE = {
    "material": ["What is it made of?", "What fabric is used?", "Is the material breathable?", "Is it cotton?"],
    "size": ["What sizes are available?", "What are the dimensions?", "How big is it?"],
    "weight": ["How much does it weigh?", "Is it heavy?", "What is its weight?"],
    "warranty": ["Does it come with a warranty?", "Is there a guarantee?", "What warranty does it have?"],
    "care": ["Is it machine washable?", "How should I wash it?", "Can I put it in the dryer?"],
    "origin": ["Where was it made?", "What is the country of origin?", "Is it made in India?"],
    "fit": ["How does it fit?", "Is the fit slim or relaxed?"],
    "comfort": ["Is it comfortable to wear all day?", "Is it soft?"],
    "delivery": ["How fast is the delivery?", "How is it packaged for shipping?"],
}  # fmt: skip
EN_REVIEW = {
    "battery": ["What do reviewers say about the battery?", "How is the battery life?", "Do buyers like the battery?"],
    "sound": ["How is the sound according to reviews?", "What do customers say about the audio?", "Is the sound good?"],
    "quality": ["What do reviewers say about the quality?", "Is it well made, according to buyers?", "How durable is it?"],
    "screen": ["What do reviews say about the screen?", "Is the display good?"],
    "price": ["Do reviewers think it is worth the price?", "What do customers say about the value?"],
    "fit": ["What do reviewers say about the fit?", "Does it fit well, according to reviews?"],
    "delivery": ["What do reviewers say about delivery?", "How was shipping for buyers?"],
    "comfort": ["Do reviewers find it comfortable?", "Is it comfortable, according to customers?"],
    "material": ["What do reviewers say about the material?"],
    "size": ["What do reviewers say about the size?"],
    "*": ["What do reviewers say about it?", "What do customers think of this product?"],
}  # fmt: skip
ZH_FACT = {
    "material": ["这件是什么材质的？", "面料是什么？", "用的什么布料？", "是{v}的吗？"],
    "color": ["有什么颜色？", "这款是什么颜色的？", "颜色有哪些？", "是{v}吗？"],
    "style": ["是什么风格的？", "这件衣服属于哪种风格？", "风格偏{v}吗？"],
    "pattern": ["上面是什么图案？", "有什么花纹？", "图案是{v}吗？"],
    "fit": ["版型是怎样的？", "是什么版型？", "版型{v}吗？"],
    "sleeve": ["袖子是什么样的？", "是什么袖型？", "袖子是{v}吗？"],
    "collar": ["是什么领子？", "领型是什么？", "是{v}吗？"],
    "length": ["有多长？", "长度是多少？", "是{v}的吗？"],
    "type": ["这是什么类型的衣服？", "属于什么品类？", "这是{v}吗？"],
    "design": ["有什么设计细节？", "款式是怎样的？", "是什么样式？"],
}  # fmt: skip
ZH_NONE = {
    "price": ["多少钱？", "价格是多少？", "这件衣服卖多少钱？"],
    "brand": ["是什么牌子的？", "品牌是什么？", "哪个牌子生产的？"],
    "size": ["有哪些尺码？", "尺寸多大？", "有大码吗？"],
    "care": ["可以机洗吗？", "怎么清洗？", "能干洗吗？"],
    "origin": ["产地是哪里？", "是哪里生产的？"],
    "warranty": ["有保修吗？", "质保多久？"],
    "weight": ["重量是多少？", "这件衣服多重？"],
    "material": ["这件是什么材质的？", "面料是什么？", "是纯棉的吗？"],
    "color": ["有什么颜色？", "这款是什么颜色的？"],
    "season": ["适合什么季节穿？", "夏天能穿吗？"],
}  # fmt: skip
ZH_REVIEW = {
    "material": ["买家对面料评价如何？", "评价里面料怎么样？"],
    "quality": ["大家觉得质量怎么样？", "评价说做工好吗？", "买过的人觉得质量如何？"],
    "size": ["评价里尺码怎么说？", "买家说尺码准吗？"],
    "delivery": ["物流快吗？", "买家评价发货速度怎么样？"],
    "price": ["评价觉得性价比高吗？", "买家觉得价格值吗？"],
    "fit": ["买家评价版型怎么样？"],
    "comfort": ["穿着舒服吗？", "买家说穿着舒适吗？"],
    "*": ["买过的人怎么评价？", "大家的评价怎么样？"],
}  # fmt: skip


def _read(path: Path, **kw) -> list[dict[str, Any]]:
    """Rows kept by `data.readers.parse_chunk`, as `data prepare` reads the file."""
    import pyarrow as pa

    from core.config.ingest import SourceConfig
    from data.readers import parse_chunk
    from data.sources import plan_source

    src = SourceConfig(name="qa", path=str(path), table="products", **kw)
    table = pa.concat_tables([parse_chunk(c, src) for c in plan_source(src, 0, 1 << 24)])
    return [r for r in table.to_pylist() if r["_reason"] is None]


def load_products(data: Path) -> dict[str, list[dict[str, Any]]]:
    myntra = _read(
        data / "myntra-dev" / "myntra_dev3000.csv",
        format="csv",
        mapping={"product_id": "Product_ID", "title": "Product_Name", "brand": "Product_Brand", "price": "Price"},
        attribute_columns={"Primary_Color": "colour", "Gender": "gender"},
    )
    adgen = _read(
        data / "advertisegen-dev" / "advertisegen_dev300.json",
        format="jsonl",
        id_from="line",
        mapping={"title": "attributes.类型", "attributes": "content"},
    )
    en = [{"product_id": r["product_id"], "facts": facts_of(r, "INR")} for r in myntra]
    zh = []
    for r in adgen:
        facts = facts_of(r)
        facts.pop("title", None)  # AdvertiseGen has no title: the reader's one is the 类型 attribute again
        zh.append({"product_id": r["product_id"], "facts": facts})
    return {"en": en, "zh": zh}


def attach_reviews(products: dict[str, list[dict]], data: Path, seed: int) -> dict[str, Any]:
    """Review texts and summaries per product (see the module docstring); returns counts."""
    from data.labelled_reviews import read_labelled
    from ml.aspects import check_summary, summarize
    from ml.sentiment import SentimentModel

    zh_rows, _ = read_labelled(data / "reviews-dev" / "online_shopping_10_cats_dev10000.csv")
    en_rows, _ = read_labelled(data / "reviews-dev" / "amazon_cells_labelled_dev500.txt")
    model = SentimentModel(seed=seed).fit([r.text for r in zh_rows + en_rows], [r.label for r in zh_rows + en_rows])
    clothing = [r.text for r in zh_rows if r.category == "衣服"]
    random.Random(seed).shuffle(clothing)
    zh_products = products["zh"]
    for i in range(min(len(zh_products), len(clothing) // 8)):
        zh_products[i]["reviews"] = clothing[8 * i : 8 * i + 8]
    for k in range(len(en_rows) // 10):
        products["en"].append({
            "product_id": f"amazon-phone-{k}",
            "facts": {"title": f"Amazon phone product {k}", "category": "Cell Phones & Accessories"},
            "reviews": [r.text for r in en_rows[10 * k : 10 * k + 10]],
        })  # fmt: skip
    problems = 0
    for lang in ("en", "zh"):
        for p in products[lang]:
            if p.get("reviews"):
                p["summary"] = summarize(p["reviews"], model)
                problems += len(check_summary(p["summary"], p["reviews"]))
    return {
        "products_with_reviews": {lang: sum(bool(p.get("reviews")) for p in products[lang]) for lang in products},
        "summary_problems": problems,
    }


def _value(v: Any) -> str:
    return str(v[0] if isinstance(v, list) else v)


def _concept_values(facts: dict) -> dict[str, list[tuple[str, Any]]]:
    """concept -> [(fact key, value)] the facts state (attributes, brand, price, title)."""
    out: dict[str, list[tuple[str, Any]]] = {}
    for k, v in (facts.get("attributes") or {}).items():
        out.setdefault(concept_of_key(k), []).append((k, v))
    if facts.get("brand"):
        out.setdefault("brand", []).append(("brand", facts["brand"]))
    if facts.get("price") is not None:
        out.setdefault("price", []).append(("price", facts["price"]))
    if "type" not in out and facts.get("category"):
        out["type"] = [("category", facts["category"])]
    if "type" not in out and facts.get("title"):
        out["type"] = [("title", facts["title"])]
    return out


def build_questions(products: dict[str, list[dict]], seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    tables = {"en": (EN_FACT, EN_NONE, EN_REVIEW), "zh": (ZH_FACT, ZH_NONE, ZH_REVIEW)}
    out = []
    for lang, items in products.items():
        fact_t, none_t, review_t = tables[lang]
        for p in items:
            have = _concept_values(p["facts"])
            aspects = {a["aspect"] for a in (p.get("summary") or {}).get("aspects", [])}

            def add(kind, concept, question, gold, p=p, lang=lang):
                out.append({"lang": lang, "product_id": p["product_id"], "kind": kind, "concept": concept,
                            "question": question, "gold": gold})  # fmt: skip

            fact_concepts = [c for c in fact_t if c in have]
            for concept in rnd.sample(fact_concepts, min(2, len(fact_concepts))):
                phrasing = rnd.choice(fact_t[concept]).format(v=_value(have[concept][0][1]))
                add("fact", concept, phrasing, sorted(k for k, _ in have[concept]))
            missing = [c for c in none_t if c not in have and c not in aspects]
            for concept in rnd.sample(missing, min(1 if p.get("reviews") else 2, len(missing))):
                add("none", concept, rnd.choice(none_t[concept]), [])
            if p.get("reviews"):
                asked = [a for a in review_t if a in aspects and a not in have] + (["*"] if aspects else [])
                for concept in rnd.sample(asked, min(2, len(asked))):
                    add(
                        "review",
                        concept,
                        rnd.choice(review_t[concept]),
                        sorted(aspects) if concept == "*" else [concept],
                    )
                absent = [a for a in review_t if a != "*" and a not in aspects and a not in have]
                if absent:
                    concept = rnd.choice(absent)
                    add("none", concept, rnd.choice(review_t[concept]), [])
    return out


def judge(q: dict[str, Any], plan, known_brands: list[str]) -> dict[str, Any]:
    """Is the planned answer right for this question, and is its text grounded in its evidence?"""
    from ml.grounding import check

    cited_keys = {c["key"] for c in plan.citations if c["type"] == "fact"}
    cited_aspects = {c["aspect"] for c in plan.citations if c["type"] == "review"}
    if q["kind"] == "fact":
        correct = plan.kind == "facts" and bool(cited_keys) and cited_keys <= set(q["gold"])
    elif q["kind"] == "review":
        correct = plan.kind == "reviews" and bool(cited_aspects) and cited_aspects <= set(q["gold"])
    else:
        correct = plan.kind == "abstain"
    result = {"correct": correct, "abstained": plan.kind == "abstain", "unsupported": [], "claims": 0}
    if plan.kind != "abstain":
        grounding = check(plan.text, plan.evidence, known_brands=known_brands)
        result["claims"] = len(grounding.claims)
        result["unsupported"] = [c.text for c in grounding.unsupported]
    return result


def score(rows: list[dict[str, Any]]) -> dict[str, Any]:
    answerable = [r for r in rows if r["kind"] != "none"]
    none = [r for r in rows if r["kind"] == "none"]
    abstained = [r for r in rows if r["abstained"]]
    answers = [r for r in rows if not r["abstained"]]
    claims = sum(r["claims"] for r in answers)
    unsupported_claims = sum(len(r["unsupported"]) for r in answers)
    precision = sum(r["kind"] == "none" for r in abstained) / len(abstained) if abstained else 1.0
    recall = sum(r["abstained"] for r in none) / len(none) if none else 1.0
    return {
        "questions": len(rows),
        "by_kind": dict(Counter(r["kind"] for r in rows)),
        "answer_accuracy": round(sum(r["correct"] for r in answerable) / len(answerable), 4) if answerable else None,
        "accuracy_by_kind": {
            k: round(sum(r["correct"] for r in rows if r["kind"] == k) / max(1, sum(r["kind"] == k for r in rows)), 4)
            for k in ("fact", "review", "none")
        },
        "abstention": {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0,
        },
        "answers": len(answers),
        "unsupported_claim_rate": round(sum(bool(r["unsupported"]) for r in answers) / len(answers), 4)
        if answers
        else 0.0,
        "unsupported_claims_per_claim": round(unsupported_claims / claims, 4) if claims else 0.0,
        "wrong_answers": sum(not r["correct"] and not r["abstained"] for r in rows),
        "matched_by": dict(Counter(r["matched_by"] for r in rows)),
    }


class _Memo:
    """The encoder with a memory: the threshold grid asks the same questions fifteen times."""

    def __init__(self, encoder):
        self.encoder, self.dim, self.memo = encoder, encoder.dim, {}

    def encode(self, texts):
        import numpy as np

        missing = [t for t in dict.fromkeys(texts) if t not in self.memo]
        if missing:
            self.memo.update(zip(missing, self.encoder.encode(missing), strict=True))
        return np.stack([self.memo[t] for t in texts])


def run(questions, products, matcher, brands) -> list[dict[str, Any]]:
    by_id = {(lang, p["product_id"]): p for lang in products for p in products[lang]}
    rows = []
    for q in questions:
        p = by_id[(q["lang"], q["product_id"])]
        plan = plan_answer(q["question"], p["facts"], p.get("summary"), matcher)
        rows.append({**q, **judge(q, plan, brands), "answer": plan.text, "matched_by": plan.matched_by,
                     "citations": plan.citations})  # fmt: skip
    return rows


def generate(questions, products, brands, n: int, models_dir: str | None) -> dict[str, Any]:
    """The real generator on `n` answerable questions per language (see the module docstring)."""
    import asyncio

    from core.config import load_config
    from core.config.serve import GenerationConfig
    from serve.content import generator_model_dir
    from serve.engine import VLLMEngine
    from serve.generator import GeneratorCore

    cfg = load_config(overrides=[f"models.dir={models_dir}"] if models_dir else [])
    engine = VLLMEngine(generator_model_dir(cfg), cfg.models.engine, "bench", cfg.serve.generation.repetition_penalty)
    core = GeneratorCore(engine, GenerationConfig(), brands)
    by_id = {(lang, p["product_id"]): p for lang in products for p in products[lang]}
    matcher = QuestionMatcher()
    out: dict[str, Any] = {}

    async def one(q):
        p = by_id[(q["lang"], q["product_id"])]
        plan = plan_answer(q["question"], p["facts"], p.get("summary"), matcher)
        if plan.kind == "abstain":
            return None
        events = [e async for e in core.stream_answer(q["question"], plan)]
        return plan, "".join(e["text"] for e in events if "text" in e), events[-1]

    from ml.grounding import check

    loop = asyncio.new_event_loop()
    for lang in ("en", "zh"):
        answerable = [q for q in questions if q["lang"] == lang and q["kind"] != "none"]
        picked = random.Random(1).sample(answerable, min(n, len(answerable)))
        started = time.perf_counter()

        async def all_of(picked=picked):  # one event loop: the engine's output handler lives on it
            return [(q, r) for q in picked if (r := await one(q)) is not None]

        pairs = loop.run_until_complete(all_of())
        picked, results = [q for q, _ in pairs], [r for _, r in pairs]
        served = [(plan, text) for plan, text, _ in results if text]
        out[lang] = {
            "questions": len(results),
            "generated_answers_served": len(served),
            "fallbacks_by_why": dict(Counter(end["why"] for _, text, end in results if not text)),
            "sentences_kept": sum(end["kept"] for _, _, end in results),
            "sentences_dropped_by_grounding": sum(end["dropped"] for _, _, end in results),
            "served_unsupported_rate": round(
                sum(bool(check(t, p.evidence, known_brands=brands).unsupported) for p, t in served) / len(served), 4
            )
            if served
            else None,
            "seconds": round(time.perf_counter() - started, 1),
            "examples": [
                {"question": q["question"], "raw": end["raw"][:160], "served": t or None, "why": end["why"]}
                for q, (_, t, end) in zip(picked, results, strict=False)
            ][:8],
        }
    engine.shutdown()
    loop.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(DEFAULT_DATA), help="the shared data folder")
    p.add_argument("--models-dir", default=str(REPO / "models"), help="where the embedded encoder is materialized")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--en-products", type=int, default=300, help="Myntra products to ask about (a seeded sample)")
    p.add_argument("--generate", type=int, default=0, help="also run the real generator on N questions per language")
    p.add_argument("--show", type=int, default=0, help="print N report-half answers per language (hand review)")
    args = p.parse_args()
    data = Path(args.data_dir)
    if not (data / "myntra-dev").is_dir() or not (data / "advertisegen-dev").is_dir():
        sys.exit(f"{data}: expected myntra-dev/, advertisegen-dev/ and reviews-dev/ (see ../shared/README.md)")

    from ml.encoder import ENCODER_NAME, TextEncoder

    started = time.perf_counter()
    products = load_products(data)
    rnd = random.Random(args.seed)
    products["en"] = rnd.sample(products["en"], min(args.en_products, len(products["en"])))
    reviews = attach_reviews(products, data, args.seed)
    questions = build_questions(products, args.seed)
    halves: dict[tuple[str, str], str] = {}
    for lang in products:
        ids = [pr["product_id"] for pr in products[lang]]
        random.Random(args.seed + 1).shuffle(ids)
        halves |= {(lang, pid): ("tune" if i % 2 == 0 else "report") for i, pid in enumerate(ids)}
    brands = sorted({pr["facts"]["brand"] for lang in products for pr in products[lang] if pr["facts"].get("brand")})
    encoder = _Memo(TextEncoder(Path(args.models_dir) / ENCODER_NAME))

    tune = [q for q in questions if halves[(q["lang"], q["product_id"])] == "tune"]
    report = [q for q in questions if halves[(q["lang"], q["product_id"])] == "report"]
    grid = {}
    for t in [round(0.2 + 0.05 * i, 2) for i in range(15)]:
        s = score(run(tune, products, QuestionMatcher(encoder, threshold=t), brands))
        grid[t] = round((s["answer_accuracy"] + s["abstention"]["f1"]) / 2, 4)
    best = max(grid, key=lambda t: (grid[t], t))
    rows = run(report, products, QuestionMatcher(encoder, threshold=best), brands)
    result: dict[str, Any] = {
        "data": {"en": "myntra-dev + reviews-dev (amazon cells)", "zh": "advertisegen-dev + reviews-dev (衣服)"},
        "reviews": reviews,
        "threshold": {"tuned_on": "tune half", "grid": grid, "chosen": best},
        "report": {lang: score([r for r in rows if r["lang"] == lang]) for lang in ("en", "zh")},
        "cue_words_only": {
            lang: score([r for r in run(report, products, QuestionMatcher(), brands) if r["lang"] == lang])
            for lang in ("en", "zh")
        },
    }
    wrong = [r for r in rows if not r["correct"]]
    result["errors"] = {
        lang: [{"q": r["question"], "kind": r["kind"], "answer": r["answer"][:80]} for r in wrong if r["lang"] == lang][
            :8
        ]
        for lang in ("en", "zh")
    }
    if args.show:
        pick = random.Random(args.seed + 2)
        result["hand_review"] = {
            lang: [
                {"q": r["question"], "kind": r["kind"], "answer": r["answer"], "correct": r["correct"]}
                for r in pick.sample([r for r in rows if r["lang"] == lang], args.show)
            ]  # fmt: skip
            for lang in ("en", "zh")
        }
    if args.generate:
        stdout = os.dup(1)
        os.dup2(2, 1)  # vLLM and its engine process log to stdout: keep it for the JSON
        try:
            result["generated"] = generate(report, products, brands, args.generate, args.models_dir)
        finally:
            sys.stdout.flush()
            os.dup2(stdout, 1)
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
