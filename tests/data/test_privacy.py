"""No raw user id survives the data stages, and erasure reaches every later shard and corpus.

    pytest -q tests/data/test_privacy.py

A small shop (the embedded sample written as raw files) whose users are planted, distinctive
ids: e-mail addresses, phone and card-like numbers, a marker string; personal data is planted in
product titles, descriptions, attributes and review text too. Some of their events are
malformed (bad timestamp, wrong field count, broken JSON, a user with no items) so they reach the
quarantine. `data prepare`, `data split` and `data corpus` run on Ray; then every file under the
artifact root (Parquet decoded to text, JSON, JSONL, manifests, the key and tombstone files) and
everything the stages logged is scanned for the raw ids: zero occurrences. One user is erased
before prepare (rows counted as `erased`, in no shard) and one after it (left out of the splits
and corpora built afterwards). The pseudonyms in the shards are the ones a server computes from
the same config, so a request with the raw id finds the history.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray

from core.config import ShopgraphConfig
from core.config.ingest import SampleConfig
from core.layout import ArtifactLayout
from core.manifest import read_manifest
from core.privacy import Pseudonymizer, TombstoneStore, erase_user
from core.shards import read_events, read_quarantine
from data.sample import write_sample_files

PLANTED = [
    "ZQX-PLANTED-USER-7f3a9c",
    "jane.doe@example.com",
    "john.smith+shop@mail.example.org",
    "+1 (415) 555-0132",
    "+86 138 0013 8000",
    "07700 900461",
    "4111 1111 1111 1111",
    "李雷-PLANTED-会员",
]
# Personal data in catalog text and review text (a seller's contact in a title, a shopper's phone in
# a review): scrubbed where it is read, so no shard, corpus or log holds it either.
PLANTED_TEXT = ["seller.amy@example.com", "(415) 555-2671", "13912345678", "5500 0000 0000 0004", "世纪大道100号"]
NAME = "Jane Q. Planted-Doe"  # an unmapped field of a rejected event: left out of its quarantined text
ERASED_BEFORE = "jane.doe@example.com"  # tombstoned before prepare
ERASED_AFTER = "+1 (415) 555-0132"  # tombstoned after prepare, before split and corpus


@pytest.fixture(scope="module", autouse=True)
def ray_local():
    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def _raw_shop(raw: Path) -> list[dict]:
    """Sample files with planted user ids, plus malformed events that must reach the quarantine."""
    products, events = write_sample_files(raw, SampleConfig(num_products=40, num_users=len(PLANTED), num_events=400))
    with events.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    users = sorted({r["user_id"] for r in rows})
    planted = dict(zip(users, PLANTED, strict=True))
    product = rows[0]["product_id"]
    for r in rows:
        r["user_id"] = planted[r["user_id"]]
        if r["event"] == "rating":
            r["text"] = (
                f"Love it. Mail me at {PLANTED_TEXT[0]} or call {PLANTED_TEXT[2]}; I live at 上海市{PLANTED_TEXT[4]}."
            )
    catalog = [json.loads(line) for line in products.read_text(encoding="utf-8").splitlines()]
    catalog[0]["title"] += f" - seller mail {PLANTED_TEXT[0]}"
    catalog[1]["description"] = (
        f"Questions: call {PLANTED_TEXT[1]} or {PLANTED_TEXT[2]}; returns to 上海市浦东新区{PLANTED_TEXT[4]}."
    )
    catalog[2]["attributes"]["contact"] = f"card {PLANTED_TEXT[3]}"
    products.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in catalog), encoding="utf-8")
    with events.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        w.writerow({**rows[0], "user_id": PLANTED[1], "ts": "yesterday"})  # unparsable ts: the record is known
        w.writerow({**rows[0], "user_id": PLANTED[4], "product_id": "NO-SUCH-PRODUCT"})  # unknown product
        f.write(f'"{PLANTED[3]}",{product},view\n')  # wrong field count
    extra = raw / "more_events.jsonl"
    extra.write_text(
        json.dumps({"user_id": PLANTED[0], "product_id": product, "event": "click", "ts": 1_700_000_000_000})
        + "\n"
        + f'{{"user_id": "{PLANTED[6]}", "product_id": "{product}", "event": \n'  # broken JSON
        + json.dumps(
            {"user_id": PLANTED[7], "product_id": product, "event": "teleport", "ts": 1, "reviewerName": NAME},
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    sequences = raw / "sequences.txt"
    sequences.write_text(f"{PLANTED[0]}\nSEQ-USER-1 {product} {product}\n", encoding="utf-8")  # a user with no items
    return [
        {"name": "products", "format": "jsonl", "path": str(products), "table": "products"},
        {"name": "events", "format": "csv", "path": str(events), "table": "events", "timestamp_unit": "ms"},
        {"name": "more", "format": "jsonl", "path": str(extra), "table": "events", "timestamp_unit": "ms"},
        {"name": "seq", "format": "user_item_sequences", "path": str(sequences), "table": "events"},
    ]


def _file_text(path: Path) -> str:
    if path.suffix == ".parquet":
        return json.dumps(pq.read_table(path).to_pylist(), ensure_ascii=False, default=str)
    return path.read_bytes().decode("utf-8", "replace")


def test_no_raw_user_id_under_the_artifact_root_or_in_the_logs(tmp_path, monkeypatch, capsys, caplog):
    from data import corpus, prepare, splits

    monkeypatch.delenv("SHOPGRAPH_PSEUDONYM_KEYS", raising=False)  # the demo path: a generated key
    caplog.set_level(logging.DEBUG)
    root = tmp_path / "artifacts"
    cfg = ShopgraphConfig.model_validate(
        {
            "artifacts": {"root": str(root)},
            "data": {"sources": _raw_shop(tmp_path / "raw"), "splits": {"k_core": 0}},
        }
    )
    logs: list[str] = []
    erase_user(cfg, ERASED_BEFORE)
    result = prepare.prepare(cfg, log=logs.append)
    erase_user(cfg, ERASED_AFTER)
    split_stats = splits.run(cfg, log=logs.append)
    corpus_stats = corpus.run(cfg)
    logs += [json.dumps(split_stats, default=str), json.dumps(corpus_stats, default=str)]

    layout = ArtifactLayout(str(root))
    pz = Pseudonymizer.from_config(cfg)  # what a Serve replica computes at start from the same config
    events = read_events(layout)
    counts = {c.name: c for c in result.counts}
    # Erased before prepare: counted, not quarantined, in no shard; every source still adds up.
    assert counts["events"].erased > 0 and result.erased == counts["events"].erased + counts["more"].erased
    assert all(c.read == c.kept + c.quarantined + c.erased for c in result.counts)
    held = set(events["user_id"].to_pylist())
    assert pz.user_key(ERASED_BEFORE) not in held
    # Everyone else is there under the pseudonym the server computes: the same key, reused.
    assert {pz.user_key(u) for u in PLANTED if u != ERASED_BEFORE} <= held
    assert all(pz.is_pseudonym(u) for u in held)
    manifest = read_manifest(root / "data" / "events")
    assert manifest["meta"]["erased"] == result.erased and manifest["meta"]["pseudonym_kid"] == "d1"
    # Quarantined event rows keep their reason; their raw text holds pseudonyms or is withheld.
    q = [r for r in read_quarantine(layout).to_pylist() if r["table"] == "events"]
    reasons = " | ".join(r["reason"] for r in q)
    assert "unknown product_id 'NO-SUCH-PRODUCT'" in reasons
    assert "malformed JSON" in reasons and "user with no items" in reasons and "expected 6 fields" in reasons
    assert "unknown event type 'teleport'" in reasons
    raws = [r["raw"] for r in q if r["raw"]]
    assert any(pz.user_key(PLANTED[0]) in r for r in raws) and any(r.startswith("<withheld") for r in raws)
    assert any(pz.user_key(PLANTED[7]) in r for r in raws)  # a rejected JSON record, mapped fields only
    # The erased user's bad row (unparsable ts) is erased too, not quarantined under a pseudonym.
    assert not any(pz.user_key(ERASED_BEFORE) in r for r in raws) and "unparsable ts" not in reasons
    # Erased after prepare: left out of the splits and corpora built afterwards, and counted.
    gone = pz.user_key(ERASED_AFTER)
    assert gone in held and split_stats["erased"] > 0 and corpus_stats["erased"] == split_stats["erased"]
    users = pq.read_table(root / "data" / "id_maps" / "users.parquet")["user_id"].to_pylist()
    assert gone not in users and users
    assert gone not in (root / "data" / "corpora" / "reasons.jsonl").read_text(encoding="utf-8")
    assert read_manifest(root / "data" / "corpora")["meta"]["stats"]["erased"] > 0
    # The new tombstone of a user erased under an old key would be added here; both are pseudonyms.
    assert TombstoneStore(str(root)).keys() >= {pz.user_key(ERASED_BEFORE), gone}

    captured = capsys.readouterr()
    texts = {str(p.relative_to(root)): _file_text(p) for p in sorted(root.rglob("*")) if p.is_file()}
    assert any(name.endswith(".parquet") for name in texts) and "privacy/tombstones.jsonl" in texts
    texts["<logs>"] = "\n".join([*logs, captured.out, captured.err, caplog.text])
    assert any("[email]" in text for text in texts.values())  # the planted catalog and review text got through
    leaks = [(name, raw) for name, text in texts.items() for raw in [*PLANTED, *PLANTED_TEXT, NAME] if raw in text]
    assert leaks == [], leaks
    assert all(raw not in text for text in texts.values() for raw in ("jane.doe", "4111 1111", "555-0132"))


def test_the_server_finds_the_history_the_pipeline_wrote(tmp_path, monkeypatch):
    """Batch and serving share one key: an ingress set up from the same config (the way its replica
    starts) looks the raw id up under the pseudonym that `data prepare` wrote."""
    import asyncio

    from core.config.privacy import PrivacyConfig
    from core.privacy import TombstoneStore
    from data import prepare
    from serve.schemas import RecommendationRequest
    from serve.testing import echo_facts
    from tests.serve.test_stream import INGRESS, _ingress

    monkeypatch.delenv("SHOPGRAPH_PSEUDONYM_KEYS", raising=False)
    root = tmp_path / "artifacts"
    cfg = ShopgraphConfig.model_validate(
        {"artifacts": {"root": str(root)}, "data": {"sources": _raw_shop(tmp_path / "raw")}}
    )
    prepare.prepare(cfg, log=lambda _: None)
    events = read_events(ArtifactLayout(str(root)))
    served = (Pseudonymizer.from_config(cfg), TombstoneStore(str(root)), PrivacyConfig())
    ingress = _ingress(echo_facts, privacy=served)
    for user in set(events["user_id"].to_pylist()):
        ingress.catalog.user_history[user] = np.asarray([1], np.int64)
    known = asyncio.run(INGRESS.recommendations(ingress, RecommendationRequest(user_id=PLANTED[2], k=2)))
    stranger = asyncio.run(INGRESS.recommendations(ingress, RecommendationRequest(user_id="not-a-customer", k=2)))
    assert not known.cold_start and stranger.cold_start


def test_the_embedded_sample_is_pseudonymized_and_erased_the_same_way():
    """No data.sources: the sample generator's rows take the same path (`data.prepare._sample_parsed`)."""
    import pyarrow.compute as pc

    from core.privacy import IngestPrivacy, Key
    from data.prepare import _sample_parsed
    from data.readers import ERASED
    from data.sample import generate

    cfg = ShopgraphConfig.model_validate({"data": {"sample": {"num_products": 40, "num_users": 5, "num_events": 200}}})
    raw = generate(cfg.data.sample, seed=cfg.data.seed)[1]["user_id"]
    pz = Pseudonymizer([Key("k2", b"x" * 32), Key("k1", b"y" * 32)])
    gone = raw[0].as_py()
    old_key_only = frozenset({pz.all_keys(gone)["k1"]})  # erased before the rotation
    parsed = _sample_parsed(cfg, "events", 1, IngestPrivacy(pz, old_key_only))
    assert all(pz.is_pseudonym(u) for u in parsed["user_id"].to_pylist())
    assert not set(raw.to_pylist()) & set(parsed["user_id"].to_pylist())
    erased = parsed.filter(pc.equal(parsed["_reason"], ERASED))
    assert erased.num_rows == pc.sum(pc.equal(raw, gone)).as_py() > 0
    assert set(erased["user_id"].to_pylist()) == {pz.user_key(gone)}  # re-recorded under the current key
