"""The embedded sample: deterministic, sized by config, realistic, with recoverable planted structure."""

from __future__ import annotations

import collections
import math
import time

import pyarrow as pa
import pytest

from core.config import ConfigError, load_config
from core.config.ingest import SampleConfig
from core.schemas import EVENT_TYPES, EVENTS, PRODUCTS
from data.sample import COMPLEMENTS, _generate, generate, leaf_category, transition_share, write_sample_files

TINY = SampleConfig(num_products=60, num_users=20, num_events=400)


def test_sizes_schemas_and_determinism():
    products, events = generate(TINY, seed=3)
    assert products.schema == PRODUCTS and events.schema == EVENTS
    assert (products.num_rows, events.num_rows) == (60, 400)
    _generate.cache_clear()
    again = generate(TINY, seed=3)
    assert again[0].equals(products) and again[1].equals(events)
    assert not generate(TINY, seed=4)[1].equals(events)
    per_user = collections.Counter(events["user_id"].to_pylist())
    assert len(per_user) == 20 and min(per_user.values()) >= 3
    assert set(events["product_id"].to_pylist()) <= set(products["product_id"].to_pylist())


def test_catalog_is_realistic_and_descriptions_state_only_facts():
    products, events = generate(SampleConfig(num_products=2000, num_users=200, num_events=4000))
    rows = products.to_pylist()
    assert len({leaf_category(r["category"]) for r in rows}) >= 25 and len({r["brand"] for r in rows}) >= 20
    assert 0.03 < sum(not r["in_stock"] for r in rows) / len(rows) < 0.15
    assert all(r["price"] > 0 for r in rows)
    described = [r for r in rows if r["description"]]
    assert 0.85 < len(described) / len(rows) < 1
    for r in described[:300]:
        text = r["description"]
        assert r["brand"] in text and text.count(".") >= 2  # several sentences
        for _key, value in r["attributes"]:
            assert value in text  # every stated fact comes from the attributes
    assert {e for e in events["event"].to_pylist()} == {"view", "cart", "purchase", "rating"} <= set(EVENT_TYPES)
    ratings = [
        v for e, v in zip(events["event"].to_pylist(), events["value"].to_pylist(), strict=True) if e == "rating"
    ]
    assert ratings and all(v in (1, 2, 3, 4, 5) for v in ratings)


def test_planted_structure_is_recoverable():
    """~60% of next items follow a complement or the same category, and a first-order Markov
    model beats popularity by >= 2x NDCG@10 on the last item: a sequential recommender can."""
    products, events = generate(SampleConfig())  # the demo size: 5k products, 2k users, 100k events
    assert 0.5 < transition_share(products, events) < 0.8
    seqs = collections.defaultdict(list)
    for user, item in zip(events["user_id"].to_pylist(), events["product_id"].to_pylist(), strict=True):
        seqs[user].append(item)
    popularity, transitions = collections.Counter(), collections.defaultdict(collections.Counter)
    for seq in seqs.values():
        popularity.update(seq[:-1])
        for a, b in zip(seq[:-2], seq[1:-1], strict=True):
            transitions[a][b] += 1
    top = [x for x, _ in popularity.most_common(10)]

    def ndcg(ranked, target):
        return 1 / math.log2(ranked.index(target) + 2) if target in ranked else 0.0

    pop = markov = 0.0
    for seq in seqs.values():
        ranked = [x for x, _ in transitions[seq[-2]].most_common(10)]
        ranked += [x for x in top if x not in ranked][: 10 - len(ranked)]
        pop, markov = pop + ndcg(top, seq[-1]), markov + ndcg(ranked, seq[-1])
    assert markov >= 2 * pop
    # popularity skew: the top 1% of products draw far more than 1% of events
    counts = collections.Counter(events["product_id"].to_pylist())
    assert sum(n for _, n in counts.most_common(50)) / events.num_rows > 0.1
    assert "Phone Cases" in COMPLEMENTS["Smartphones"]


def test_fast_enough():
    _generate.cache_clear()
    start = time.perf_counter()
    generate(SampleConfig(num_products=5000, num_users=2000, num_events=100_000), seed=11)
    assert time.perf_counter() - start < 10  # measured ~0.5 s; generous for a loaded CI box


def test_sample_files_read_back(tmp_path):
    products_path, events_path = write_sample_files(tmp_path, TINY)
    assert products_path.read_text(encoding="utf-8").count("\n") == 60
    import pyarrow.csv as pacsv

    events = pacsv.read_csv(events_path)
    assert events.num_rows == 400 and events.column_names == [f.name for f in EVENTS]
    assert pa.types.is_integer(events["ts"].type)


def test_sample_size_is_validated():
    with pytest.raises(ConfigError, match="num_events"):
        load_config(overrides=["data.sample.num_users=100", "data.sample.num_events=10"])


def _digest(table: pa.Table) -> str:
    import hashlib

    return hashlib.sha256(str(table.to_pylist()).encode()).hexdigest()[:16]


def test_english_sample_is_unchanged_by_the_chinese_shop():
    """Pinned before the Chinese shop existed: the en tables are byte-for-byte what they were."""
    _generate.cache_clear()
    products, events = generate(TINY, seed=3)
    assert (_digest(products), _digest(events)) == ("96acc951552d9262", "1982e791d8078066")
    assert generate(SampleConfig(num_products=60, num_users=20, num_events=400, language="en"), seed=3)[0] == products


ADVERTISEGEN_KEYS = {"类型", "材质", "颜色", "风格", "图案", "版型", "领型", "袖长", "裙长", "裤长", "裤型", "裙型"}


def test_chinese_shop_is_chinese_and_keeps_the_planted_structure():
    from core.facts import language_of
    from ml.aspects import aspects_of

    cfg = SampleConfig(num_products=1500, num_users=300, num_events=9000, language="zh")
    products, events = generate(cfg, seed=1)
    assert products.schema == PRODUCTS and events.schema == EVENTS
    assert generate(cfg, seed=1)[0].equals(products)
    rows = products.to_pylist()
    assert all(language_of(r["title"]) == "zh" for r in rows)
    assert all(len(r["category"].split(" > ")) == 3 for r in rows) and "服饰 > 上衣 > T恤" in {
        r["category"] for r in rows
    }
    keys = {k for r in rows for k, _ in r["attributes"]}
    assert len(keys & ADVERTISEGEN_KEYS) >= 10 and all(language_of(k) == "zh" for k in keys)
    assert all(r["price"] > 0 and r["price"] % 10 == 9 for r in rows)  # whole yuan: 39, 129, 1299
    assert load_config(overrides=["data.sample.language=zh"]).data.currency == "CNY"
    for r in [r for r in rows if r["description"]][:300]:
        assert r["brand"] in r["description"] and r["description"].count("。") >= 2
        assert all(value in r["description"] for key, value in r["attributes"] if key != "颜色")
    reviews = [t for t in events["text"].to_pylist() if t]
    assert reviews and all(language_of(t) == "zh" and t.endswith("。") for t in reviews)
    named = collections.Counter(a for t in reviews for a in aspects_of(t))
    assert {"size", "material", "quality", "delivery", "fit"} <= set(named)  # 尺码, 面料, 做工, 物流, 版型
    assert 0.5 < transition_share(products, events) < 0.8
