"""`shopgraph train recommender --warm-start`: the exported model's weights carried over, item rows
matched by product_id, new items initialised as a fresh model is, clear errors otherwise; end to
end on Ray Train, the warm model starts where the parent ended (its first epoch's loss is below
the parent's first, cold epoch).

    pytest -q tests/train/test_warm_start.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from core.manifest import files_digest, read_manifest, staged_dir, write_manifest
from core.schemas import ITEM_IDS, LOO_SPLIT
from ml.sasrec import SASRec, SASRecConfig, load_exported
from tests.train.conftest import NUM_ITEMS, _cfg, _write_split
from train.recommender import main, train_recommender, warm_start_state


def _items(names: list[str], idx: list[int] | None = None) -> pa.Table:
    return pa.table({"product_id": names, "item_idx": idx or list(range(1, len(names) + 1))}, schema=ITEM_IDS)


def _export(root: Path, cfg: SASRecConfig, items: pa.Table | None, seed: int = 1) -> SASRec:
    """An exported recommender directory as `train_recommender` writes it (weights random)."""
    torch.manual_seed(seed)
    model = SASRec(cfg)
    with staged_dir(root) as staging:
        torch.save(model.state_dict(), staging / "model.pt")
        (staging / "model_config.json").write_text(json.dumps(cfg.to_dict()))
        np.save(staging / "item_vectors.npy", model.item_vectors().detach().numpy())
        if items is not None:
            pq.write_table(items, staging / "item_ids.parquet")
        write_manifest(staging, {"model": "sasrec"})
    return model


def test_known_items_start_from_their_vectors_new_items_from_the_init(tmp_path: Path):
    old_cfg = SASRecConfig(num_items=4, max_len=8, hidden=16, item_bias=True)
    parent = tmp_path / "recommender"
    old = _export(parent, old_cfg, _items(["a", "b", "c", "d"]))
    # c is gone from the new data (not kept), e and f are new; a, b, d keep their indices
    new_items = _items(["a", "b", "d", "e", "f"], [1, 2, 4, 3, 5])
    new_cfg = SASRecConfig(num_items=5, max_len=8, hidden=16, item_bias=True)
    bias = np.log1p(np.arange(6, dtype=np.float32))

    state, record = warm_start_state(parent, new_cfg, new_items, bias_init=bias, seed=0)

    model = SASRec(new_cfg)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})  # shapes fit the new config
    emb, old_emb = model.item_emb.weight.detach(), old.item_emb.weight.detach()
    for new_idx, old_idx in [(1, 1), (2, 2), (4, 4)]:
        assert torch.equal(emb[new_idx], old_emb[old_idx])
        assert model.item_bias[new_idx] == old.item_bias[old_idx]
    torch.manual_seed(0)
    fresh = SASRec(new_cfg)
    for new_idx in (3, 5):  # e, f: the model's own initialisation, the bias from the counts
        assert torch.equal(emb[new_idx], fresh.item_emb.weight.detach()[new_idx])
        assert float(model.item_bias[new_idx]) == pytest.approx(float(bias[new_idx]))
    for key, value in old.state_dict().items():
        if key not in ("item_emb.weight", "item_bias"):
            assert torch.equal(model.state_dict()[key], value), key
    assert record == {
        "parent_version": files_digest(read_manifest(parent))[:12],
        "parent_created_at": read_manifest(parent)["created_at"],
        "items_known": 3,
        "items_same_index": 3,
        "items_new": 2,
        "items_dropped": 1,
    }


def test_a_different_shape_or_no_export_is_a_clear_error(tmp_path: Path):
    parent = tmp_path / "recommender"
    items = _items(["a", "b"])
    with pytest.raises(FileNotFoundError, match="train once without --warm-start"):
        warm_start_state(parent, SASRecConfig(num_items=2), items, bias_init=None, seed=0)
    _export(parent, SASRecConfig(num_items=2, max_len=8, hidden=16), items)
    with pytest.raises(ValueError, match=r"max_len 8 \(config: 50\).*--set train.recommender.max_len=8"):
        warm_start_state(parent, SASRecConfig(num_items=2, hidden=16), items, bias_init=None, seed=0)
    with pytest.raises(ValueError, match=r"--set train.recommender.hidden=16"):
        warm_start_state(parent, SASRecConfig(num_items=2, max_len=8, hidden=32), items, bias_init=None, seed=0)
    with pytest.raises(ValueError, match="no item of the new split is known"):
        warm_start_state(parent, SASRecConfig(num_items=1, max_len=8, hidden=16), _items(["z"]), bias_init=None, seed=0)
    _export(parent, SASRecConfig(num_items=2, max_len=8, hidden=16), None)  # exported before item maps
    with pytest.raises(FileNotFoundError, match="has no item_ids.parquet"):
        warm_start_state(parent, SASRecConfig(num_items=2, max_len=8, hidden=16), items, bias_init=None, seed=0)


def test_entry_point_without_an_exported_model_says_what_to_run(tmp_path: Path, capsys):
    _write_split(tmp_path)
    assert main(["--warm-start", "--set", f"artifacts.root={tmp_path}"]) == 1
    err = capsys.readouterr().err
    assert "--warm-start needs an exported recommender" in err and "train once without --warm-start" in err


# ----------------------------------------------------------------------------- end to end (Ray Train)

NEW = 10  # items the shop added since the parent was trained


def _grow_split(root: Path, seed: int = 1) -> None:
    """The data after new events: the same chains over NUM_ITEMS + NEW items; every known item keeps
    its index (data.splits.keep_item_ids), the new ones follow."""
    total = NUM_ITEMS + NEW
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(400):
        item, seq = int(rng.integers(1, total + 1)), []
        for _ in range(int(rng.integers(6, 16))):
            seq.append(item)
            item = item % total + 1 if rng.random() > 0.15 else int(rng.integers(1, total + 1))
        seqs.append(seq)
    table = pa.table(
        {
            "user_idx": np.arange(1, 401),
            "train_items": [s[:-2] for s in seqs],
            "valid_item": [s[-2] for s in seqs],
            "test_item": [s[-1] for s in seqs],
        },
        schema=LOO_SPLIT,
    )
    pq.write_table(table, root / "data" / "splits" / "loo.parquet")
    pq.write_table(_items([f"p{i}" for i in range(1, total + 1)]), root / "data" / "id_maps" / "items.parquet")


@pytest.mark.slow
def test_warm_start_trains_on_grown_data_exports_and_starts_ahead_of_cold(tmp_path: Path):
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    try:
        small = ("train.scaling.num_workers=1", "train.recommender.eval_users=100")
        _write_split(tmp_path)
        parent_meta = train_recommender(_cfg(tmp_path, "train.recommender.epochs=3", *small))
        assert parent_meta["warm_start"] is None
        export = tmp_path / "models" / "recommender"
        parent_version = files_digest(read_manifest(export))[:12]
        parent_vectors = np.load(export / "item_vectors.npy")

        parent_curve = json.loads((export / "metrics.json").read_text())["curves"]

        _grow_split(tmp_path)
        warm = train_recommender(_cfg(tmp_path, "train.recommender.epochs=1", *small), warm_start=True)
    finally:
        ray.shutdown()

    assert warm["warm_start"]["parent_version"] == parent_version
    assert warm["warm_start"]["items_known"] == NUM_ITEMS and warm["warm_start"]["items_new"] == NEW
    assert warm["warm_start"]["items_same_index"] == NUM_ITEMS
    model, model_cfg, vectors = load_exported(export)  # the warm export is complete and loads
    assert model_cfg.num_items == NUM_ITEMS + NEW and vectors.shape == (NUM_ITEMS + NEW, 32 + 1)
    assert read_manifest(export)["meta"]["warm_start"] == warm["warm_start"]
    # the known items moved on from their parent vectors, not from random ones
    moved = np.linalg.norm(vectors[:NUM_ITEMS] - parent_vectors, axis=1).mean()
    assert moved < 0.5 * np.linalg.norm(parent_vectors, axis=1).mean()
    # its first epoch starts where the parent ended: below the parent's own first (cold) epoch on
    # data drawn the same way, and about at the parent's last
    warm_loss = json.loads((export / "metrics.json").read_text())["curves"][0]["train_loss"]
    cold_loss, parent_last = parent_curve[0]["train_loss"], parent_curve[-1]["train_loss"]
    print(f"first-epoch train loss: warm {warm_loss:.3f}, cold {cold_loss:.3f}; parent's last {parent_last:.3f}")
    assert warm_loss < cold_loss - 0.5, (warm_loss, cold_loss)


def test_cli_flag_reaches_the_recipe(tmp_path: Path):
    from tests.conftest import run_cli

    _write_split(tmp_path)
    done = run_cli("train", "recommender", "--warm-start", "--set", f"artifacts.root={tmp_path}", timeout=180)
    assert done.returncode == 1 and "--warm-start needs an exported recommender" in done.stderr, done.stderr
