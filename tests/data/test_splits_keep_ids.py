"""`data.splits.keep_item_ids`: a new split keeps every item index of the previous id map and
appends new items, so `train recommender --warm-start` finds known items where they were.

    pytest -q tests/data/test_splits_keep_ids.py
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.config import load_config
from core.layout import ArtifactLayout
from core.schemas import ITEM_IDS
from core.shards import write_shard_set
from data.splits import build_splits, run
from tests.data.test_splits import NO_KCORE, TINY, events


def test_known_items_keep_their_index_and_new_ones_follow():
    base = build_splits(NO_KCORE, events(TINY)).item_ids  # a=1 b=2 c=3 d=4
    grown = [r for r in TINY if r[1] != "c"] + [("u1", "f", "view", 30), ("u2", "e", "view", 31)]
    s = build_splits(NO_KCORE, events(grown), base_items=base)
    # c no longer occurs but keeps 3; the new e and f follow in natural order
    assert s.item_ids.to_pylist() == [{"product_id": p, "item_idx": n} for n, p in enumerate("abcdef", 1)]
    assert s.item_ids.schema.equals(ITEM_IDS)
    assert s.stats["items_kept_index"] == 4 and s.stats["items_new"] == 2
    # u1: a b d f -> 1 2 4 6
    assert s.sequences.to_pylist()[0]["items"] == [1, 2, 4, 6]
    # without the base the ids are dense over what occurs
    assert build_splits(NO_KCORE, events(grown)).item_ids["product_id"].to_pylist() == list("abdef")


def test_split_stage_reads_the_previous_map_only_when_asked(tmp_path):
    layout = ArtifactLayout(str(tmp_path))
    overrides = [f"artifacts.root={tmp_path}", "data.splits.k_core=0"]
    write_shard_set(events(TINY), layout.events, rows_per_shard=1000, row_group_rows=1000, meta={"stage": "test"})
    run(load_config(overrides=overrides), log=lambda _: None)
    grown = [("u9", "0", "view", 1), *TINY]  # "0" sorts first: a fresh map would shift every index
    write_shard_set(events(grown), layout.events, rows_per_shard=1000, row_group_rows=1000, meta={"stage": "test"})

    run(load_config(overrides=[*overrides, "data.splits.keep_item_ids=true"]), log=lambda _: None)
    items = pq.read_table(f"{layout.id_maps}/items.parquet").to_pylist()
    assert [(r["product_id"], r["item_idx"]) for r in items] == [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("0", 5)]

    run(load_config(overrides=overrides), log=lambda _: None)  # off: dense ids in natural order again
    assert pq.read_table(f"{layout.id_maps}/items.parquet")["product_id"].to_pylist() == ["0", "a", "b", "c", "d"]


def test_a_broken_previous_map_is_a_clear_error(tmp_path):
    from core.manifest import staged_dir, write_manifest

    layout = ArtifactLayout(str(tmp_path))
    write_shard_set(events(TINY), layout.events, rows_per_shard=1000, row_group_rows=1000, meta={"stage": "test"})
    with staged_dir(tmp_path / "data" / "id_maps") as staging:
        pq.write_table(
            pa.table({"product_id": ["a", "b"], "item_idx": [1, 5]}, schema=ITEM_IDS), staging / "items.parquet"
        )
        write_manifest(staging, {})
    cfg = load_config(
        overrides=[f"artifacts.root={tmp_path}", "data.splits.k_core=0", "data.splits.keep_item_ids=true"]
    )
    with pytest.raises(ValueError, match="is not a map onto 1..2; rerun with --set data.splits.keep_item_ids=false"):
        run(cfg, log=lambda _: None)


def test_keep_item_ids_must_be_a_boolean():
    from core.config import ConfigError

    with pytest.raises(ConfigError, match="keep_item_ids"):
        load_config(overrides=["data.splits.keep_item_ids=sometimes"])
