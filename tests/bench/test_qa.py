"""bench/qa.py's question set and scoring still run against ml.qa (on a tiny catalog, no data files).

pytest -q tests/bench/test_qa.py
"""

from __future__ import annotations

import importlib.util

from ml.qa import QuestionMatcher
from tests.conftest import REPO


def _bench():
    spec = importlib.util.spec_from_file_location("bench_qa", REPO / "bench" / "qa.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_questions_of_every_kind_are_built_answered_and_scored():
    bench = _bench()
    summary = {"reviews": 8, "note": None, "aspects": [
        {"aspect": "quality", "mentions": 5, "positive": 4, "sentence": "quality: 4 of 5 reviews positive", "quote": "质量很好"},
    ]}  # fmt: skip
    products = {
        "en": [
            {
                "product_id": f"e{i}",
                "facts": {
                    "title": "Roadster Men Navy Shirt",
                    "brand": "Roadster",
                    "price": 999,
                    "currency": "INR",
                    "attributes": {"colour": "Navy", "gender": "Men"},
                },
            }
            for i in range(4)
        ],  # fmt: skip
        "zh": [
            {
                "product_id": f"z{i}",
                "facts": {"attributes": {"类型": "上衣", "材质": "牛仔布", "风格": ["简约", "复古"]}},
                "reviews": ["质量很好"] * 8,
                "summary": summary,
            }
            for i in range(4)
        ],  # fmt: skip
    }
    questions = bench.build_questions(products, seed=0)
    assert {q["kind"] for q in questions if q["lang"] == "zh"} == {"fact", "none", "review"}
    assert {q["kind"] for q in questions if q["lang"] == "en"} == {"fact", "none"}
    rows = bench.run(questions, products, QuestionMatcher(), ["Roadster"])
    for lang in ("en", "zh"):
        s = bench.score([r for r in rows if r["lang"] == lang])
        assert s["questions"] and s["unsupported_claim_rate"] == 0.0 and s["abstention"]["recall"] == 1.0, s
