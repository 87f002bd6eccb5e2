"""Splits and features on hand-checked tiny examples: LOO, temporal, k-core, ids, popularity."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.config.data import SplitsConfig
from core.layout import ArtifactLayout
from core.manifest import verify_dir
from core.schemas import EVENTS, ITEM_IDS, LOO_SPLIT, SEQUENCES, USER_IDS
from data.splits import build_splits, splits_from_sequences, write_splits
from tests.conftest import SHARED

EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def events(rows: list[tuple[str, str, str, float]], unit: str = "ms") -> pa.Table:
    """(user, item, event, t) rows; t in ms (or days) after EPOCH."""
    step = dt.timedelta(milliseconds=1) if unit == "ms" else dt.timedelta(days=1)
    return pa.table(
        {
            "user_id": [r[0] for r in rows],
            "product_id": [r[1] for r in rows],
            "event": [r[2] for r in rows],
            "ts": [EPOCH + r[3] * step for r in rows],
            "value": [None] * len(rows),
            "text": [None] * len(rows),
        },
        schema=EVENTS,
    )


# Hand-checked example. u1: a(3) b(5, row 1) c(5, row 3: same ts, later row) c(6, repeat) d(9).
TINY = [
    ("u2", "a", "view", 10),
    ("u1", "b", "view", 5),
    ("u1", "a", "click", 3),
    ("u1", "c", "cart", 5),
    ("u1", "c", "purchase", 6),
    ("u2", "b", "view", 1),
    ("u3", "d", "view", 2),
    ("u1", "d", "view", 9),
    ("u2", "c", "rating", 20),
]
NO_KCORE = SplitsConfig(k_core=0, temporal_test_fraction=0.25)


def ms(*ts: int) -> list[dt.datetime]:
    return [EPOCH + dt.timedelta(milliseconds=t) for t in ts]


def test_sequences_ids_and_leave_one_out_by_hand():
    s = build_splits(NO_KCORE, events(TINY))
    assert s.user_ids.to_pylist() == [
        {"user_id": "u1", "user_idx": 1},
        {"user_id": "u2", "user_idx": 2},
        {"user_id": "u3", "user_idx": 3},
    ]
    assert s.item_ids.to_pylist() == [{"product_id": p, "item_idx": n} for n, p in enumerate("abcd", 1)]
    # a=1 b=2 c=3 d=4; the tie at t=5 keeps input order (b before c); the repeated c is dropped.
    assert s.sequences.to_pylist() == [
        {"user_idx": 1, "items": [1, 2, 3, 4], "ts": ms(3, 5, 5, 9)},
        {"user_idx": 2, "items": [2, 1, 3], "ts": ms(1, 10, 20)},
        {"user_idx": 3, "items": [4], "ts": ms(2)},
    ]
    assert s.loo.to_pylist() == [
        {"user_idx": 1, "train_items": [1, 2], "valid_item": 3, "test_item": 4},
        {"user_idx": 2, "train_items": [2], "valid_item": 1, "test_item": 3},
        {"user_idx": 3, "train_items": [4], "valid_item": None, "test_item": None},  # < 3 interactions
    ]
    for table, schema in [(s.user_ids, USER_IDS), (s.item_ids, ITEM_IDS), (s.sequences, SEQUENCES), (s.loo, LOO_SPLIT)]:
        assert table.schema.equals(schema)


def test_temporal_split_by_hand():
    s = build_splits(NO_KCORE, events(TINY))
    # 8 interactions, ts sorted 1 2 3 5 5 9 10 20; 0.25 test -> cut at index floor(8*0.75)=6 -> ts 10.
    assert s.stats["temporal_cut"] == ms(10)[0].isoformat()
    assert s.temporal_train.to_pylist() == [
        {"user_idx": 1, "items": [1, 2, 3, 4], "ts": ms(3, 5, 5, 9)},
        {"user_idx": 2, "items": [2], "ts": ms(1)},
        {"user_idx": 3, "items": [4], "ts": ms(2)},
    ]
    assert s.temporal_test.to_pylist() == [{"user_idx": 2, "items": [1, 3], "ts": ms(10, 20)}]


def test_without_dedup_the_repeat_stays():
    s = build_splits(SplitsConfig(k_core=0, dedup_consecutive=False), events(TINY))
    assert s.sequences.to_pylist()[0]["items"] == [1, 2, 3, 3, 4]
    assert s.loo.to_pylist()[0] == {"user_idx": 1, "train_items": [1, 2, 3], "valid_item": 3, "test_item": 4}


def test_event_type_filter():
    s = build_splits(SplitsConfig(k_core=0, interaction_events=["cart", "purchase", "rating"]), events(TINY))
    # only u1 c(cart) c(purchase, deduped) and u2 c(rating) remain
    assert s.user_ids["user_id"].to_pylist() == ["u1", "u2"]
    assert s.item_ids["product_id"].to_pylist() == ["c"]
    assert s.sequences["items"].to_pylist() == [[1], [1]]


def test_k_core_is_iterative():
    rows = [("u1", "a", "view", 1), ("u1", "b", "view", 2), ("u1", "c", "view", 3), ("u2", "a", "view", 1), ("u2", "b", "view", 2),
            ("u3", "a", "view", 1), ("u3", "d", "view", 2), ("u4", "c", "view", 1)]  # fmt: skip
    # round 1 drops d and u4; then u3 (only a) and c (only u1) fall below 2; round 3 is stable.
    s = build_splits(SplitsConfig(k_core=2, dedup_consecutive=False), events(rows))
    assert s.user_ids["user_id"].to_pylist() == ["u1", "u2"]
    assert s.item_ids["product_id"].to_pylist() == ["a", "b"]
    assert s.sequences["items"].to_pylist() == [[1, 2], [1, 2]]
    assert s.stats["k_core_rounds"] == 3


def test_popularity_counts_and_recency():
    s = build_splits(NO_KCORE, events(TINY))
    pop = {r["product_id"]: r for r in s.popularity.to_pylist()}
    assert s.popularity["product_id"].to_pylist() == ["c", "a", "b", "d"]  # by count desc, then id
    assert (
        pop["c"]["count"] == 3
        and pop["c"]["count_cart"] == 1
        and pop["c"]["count_purchase"] == 1
        and pop["c"]["count_rating"] == 1
    )
    assert pop["a"]["count_view"] == 1 and pop["a"]["count_click"] == 1 and pop["a"]["item_idx"] == 1
    # one half-life (7 days) older counts half
    day = build_splits(NO_KCORE, events([("u", "old", "view", 0), ("u", "new", "view", 7)], unit="days"))
    scores = {r["product_id"]: r["recency_score"] for r in day.popularity.to_pylist()}
    assert scores == pytest.approx({"new": 1.0, "old": 0.5})


def test_numeric_ids_keep_their_order_and_sequence_lines_split_like_events():
    s = splits_from_sequences(NO_KCORE, ["10 3 1 2", "2 1 2", "1 7"])
    assert s.user_ids["user_id"].to_pylist() == ["1", "2", "10"]  # numeric, not "1", "10", "2"
    assert s.item_ids["product_id"].to_pylist() == ["1", "2", "3", "7"]
    assert s.loo.to_pylist() == [
        {"user_idx": 1, "train_items": [4], "valid_item": None, "test_item": None},
        {"user_idx": 2, "train_items": [1, 2], "valid_item": None, "test_item": None},
        {"user_idx": 3, "train_items": [3], "valid_item": 1, "test_item": 2},
    ]


def test_deterministic_across_runs_and_interleavings(tmp_path):
    a = build_splits(SplitsConfig(k_core=0), events(TINY))
    # Interleave users differently; each user's own row order is unchanged.
    by_user = sorted(TINY, key=lambda r: r[0], reverse=True)
    b = build_splits(SplitsConfig(k_core=0), events(by_user))
    for name in ("user_ids", "item_ids", "sequences", "loo", "temporal_train", "temporal_test", "popularity"):
        assert getattr(a, name).equals(getattr(b, name)), name
    # Written twice: identical files, committed with manifests.
    hashes = []
    for run in ("r1", "r2"):
        layout = ArtifactLayout(str(tmp_path / run))
        write_splits(layout, a, SplitsConfig(k_core=0))
        hashes.append(
            {
                k: v["sha256"]
                for p in (layout.id_maps, layout.sequences, layout.splits, layout.features)
                for k, v in verify_dir(p, full=True)["files"].items()
            }
        )
    assert hashes[0] == hashes[1]
    assert set(hashes[0]) == {
        "users.parquet",
        "items.parquet",
        "sequences.parquet",
        "loo.parquet",
        "temporal/train.parquet",
        "temporal/test.parquet",
        "item_popularity.parquet",
    }
    assert pq.read_table(f"{layout.splits}/loo.parquet").equals(a.loo)


def test_empty_or_fully_filtered_input_says_what_to_change():
    with pytest.raises(ValueError, match="events table is empty"):
        build_splits(NO_KCORE, EVENTS.empty_table())
    with pytest.raises(ValueError, match="data.splits.interaction_events"):
        build_splits(SplitsConfig(k_core=0, interaction_events=["purchase"]), events([("u", "a", "view", 1)]))
    with pytest.raises(ValueError, match="lower data.splits.k_core"):
        build_splits(SplitsConfig(k_core=5), events(TINY))
    with pytest.raises(ValueError, match="event type twice"):
        SplitsConfig(interaction_events=["view", "view"])


@pytest.mark.skipif(
    not (SHARED / "data/amazon-toys-s3rec/Toys_and_Games.txt").is_file(), reason="shared Amazon Toys sample not present"
)
def test_public_sequence_file_keeps_its_ids_and_counts():
    lines = (SHARED / "data/amazon-toys-s3rec/Toys_and_Games.txt").read_text().splitlines()
    s = splits_from_sequences(SplitsConfig(k_core=0, dedup_consecutive=False), lines)
    n_interactions = sum(len(line.split()) - 1 for line in lines)
    assert s.sequences["items"].combine_chunks().values.to_numpy().size == n_interactions
    assert s.loo.num_rows == len(lines)
    # ids are already 1..N in these files: the dense mapping is the identity
    assert s.item_ids["product_id"].to_pylist() == [str(n) for n in s.item_ids["item_idx"].to_pylist()]
    first = lines[0].split()
    assert s.loo.to_pylist()[0]["test_item"] == int(first[-1]) and s.loo.to_pylist()[0]["valid_item"] == int(first[-2])


def test_split_command_reads_the_shard_set_and_commits(tmp_path):
    from tests.conftest import run_cli

    layout = ArtifactLayout(str(tmp_path))
    missing = run_cli("data", "split", "--set", f"artifacts.root={tmp_path}", timeout=120)
    assert missing.returncode == 1 and "shopgraph data prepare" in missing.stderr
    from core.shards import write_shard_set

    write_shard_set(events(TINY), layout.events, rows_per_shard=1000, row_group_rows=1000, meta={"stage": "test"})
    done = run_cli("data", "split", "--set", f"artifacts.root={tmp_path}", "--set", "data.splits.k_core=0", timeout=120)
    assert done.returncode == 0, done.stderr
    assert '"users": 3' in done.stdout
    assert verify_dir(layout.splits)["meta"]["config"]["k_core"] == 0
    assert pq.read_table(f"{layout.id_maps}/items.parquet")["product_id"].to_pylist() == ["a", "b", "c", "d"]
