"""The SASRec recipe on Ray Train: 2 CPU workers, loss falls, a worker failure resumes from
the checkpoint, the export is complete, and it beats popularity on planted structure."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.config import ConfigError, load_config
from core.manifest import verify_dir
from tests.train.conftest import NUM_ITEMS, _cfg, _write_split

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def trained(trained_recommender):
    return trained_recommender


def test_two_worker_training_loss_falls_and_survives_a_worker_failure(trained):
    root, meta = trained
    curves = json.loads((root / "models" / "recommender" / "metrics.json").read_text())["curves"]
    epochs = [c["epoch"] for c in curves]
    # Epoch 2's first attempt was killed; the restarted workers resumed from the epoch-1
    # checkpoint, so every epoch appears exactly once.
    assert epochs == list(range(6))
    losses = [c["train_loss"] for c in curves]
    assert losses[-1] < losses[0] * 0.8, losses
    # every validation reports both protocols' view (full NDCG@10 selects, sampled HR@10 is shown)
    assert all(0 <= c["valid_sampled_hr@10"] <= 1 and 0 <= c["valid_ndcg@10"] <= 1 for c in curves)
    assert meta["scaling"]["num_workers"] == 2


def test_export_is_complete_and_loadable(trained):
    root, meta = trained
    export = root / "models" / "recommender"
    manifest = verify_dir(export, full=True)
    assert {"model.pt", "model_config.json", "item_vectors.npy", "metrics.json", "report.html", "curves.png"} <= set(
        manifest["files"]
    )
    vectors = np.load(export / "item_vectors.npy")
    assert vectors.shape == (NUM_ITEMS, 32 + 1) and vectors.dtype == np.float32  # + the item bias (default on)
    assert manifest["meta"]["test"]["sasrec"]["full"]["users"] == 400
    # the index main retrieval searches, built at export: a catalog this small is searched exactly
    assert "item_index.faiss" in manifest["files"] and manifest["meta"]["item_index"]["type"] == "flat"


def test_a_large_catalog_exports_an_ann_item_index_with_its_recall():
    """At 3,000 items the configured HNSW is built; the manifest says how well it finds the exact
    top 10 for real query vectors of the model (test users' histories)."""
    import torch

    from core.config.train import RecommenderConfig
    from ml.index import ItemIndex
    from ml.sasrec import SASRec, SASRecConfig
    from train.evaluate import LooData
    from train.recommender import export_item_index

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    loo = LooData.from_sequences([list(rng.integers(1, 3001, 8)) for _ in range(300)], 3000)
    model = SASRec(SASRecConfig(num_items=3000, hidden=16, num_heads=1, item_bias=True)).eval()
    vectors = model.item_vectors().detach().numpy()
    hp = RecommenderConfig(hidden=16, num_heads=1, item_index={"type": "hnsw", "recall_sample": 200})
    index, record = export_item_index(model, vectors, loo, hp, seed=0)
    assert record["type"] == "hnsw" and record["items"] == 3000 and record["recall_queries"] == 200
    assert record["recall@10"] >= 0.9 and record["overfetch"] == hp.item_index.overfetch
    _, rows = ItemIndex(index, vectors, record).search(vectors[:2, :] * 0 + 1, 5)
    assert (rows >= 0).all()


def test_sasrec_beats_popularity_under_both_protocols(trained):
    _, meta = trained
    test = meta["test"]
    for protocol in ("full", "sampled_50"):
        assert test["sasrec"][protocol]["ndcg@10"] > 2 * test["popularity"][protocol]["ndcg@10"], (protocol, test)


def test_evaluate_command_reevaluates_the_export(trained):
    from train.recommender import evaluate_exported

    root, meta = trained
    results = evaluate_exported(_cfg(root))
    assert results["sasrec"]["full"] == meta["test"]["sasrec"]["full"]  # same users, same tie-breaks
    assert (root / "reports" / "recommender" / "report.html").is_file()


def test_missing_split_fails_before_training(ray_local, tmp_path):
    from train.recommender import train_recommender

    with pytest.raises(FileNotFoundError, match="shopgraph data split"):
        train_recommender(_cfg(tmp_path))


def test_more_workers_than_cpus_fails_before_training(ray_local, tmp_path):
    from train.recommender import train_recommender

    _write_split(tmp_path)
    with pytest.raises(ValueError, match="train.scaling.num_workers"):
        train_recommender(_cfg(tmp_path, "train.scaling.num_workers=8", "train.scaling.cpus_per_worker=1"))


def test_too_many_negatives_fails_before_training(ray_local, tmp_path):
    from train.recommender import train_recommender

    _write_split(tmp_path)
    with pytest.raises(ValueError, match="num_negatives"):
        train_recommender(_cfg(tmp_path, "train.evaluation.num_negatives=500"))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.evaluation.ks=[0,10]", "train.evaluation.ks"),
        ("train.recommender.num_heads=3", "num_heads"),
        ("train.recommender.loss=mse", "train.recommender.loss"),
    ],
)
def test_bad_recommender_config_is_rejected(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert key in str(err.value)


def test_full_softmax_loss_never_counts_padding_as_a_class():
    import torch
    import torch.nn.functional as F

    from ml.sasrec import sequence_loss

    torch.manual_seed(0)
    states, weight = torch.randn(3, 4, 8), torch.randn(11, 8)
    targets = torch.tensor([[0, 1, 2, 3], [0, 0, 5, 10], [4, 4, 4, 4]])
    mask = targets > 0
    logits = states[mask] @ weight[1:].T  # padding (row 0) is never a class
    assert torch.allclose(sequence_loss(states, targets, weight, loss="ce"), F.cross_entropy(logits, targets[mask] - 1))


def test_cli_without_a_split_says_what_to_run(tmp_path):
    from tests.conftest import run_cli

    result = run_cli("train", "recommender", "--set", f"artifacts.root={tmp_path}", timeout=120)
    assert result.returncode == 1
    assert "shopgraph data split" in result.stderr


def test_python_m_entry_point_rejects_bad_config():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "train.recommender", "--set", "train.recommender.epochs=0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "train.recommender.epochs" in result.stderr


def test_evaluate_entry_point_without_a_trained_model_says_what_to_run(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "train.evaluate", "--set", f"artifacts.root={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "shopgraph train recommender" in result.stderr


# ----------------------------------------------------------------------------- item attributes (feature-enriched SASRec)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.recommender.item_attributes=maybe", "train.recommender.item_attributes"),
        ("train.recommender.max_attributes=0", "train.recommender.max_attributes"),
        ("train.recommender.max_attributes=1000", "train.recommender.max_attributes"),
    ],
)
def test_bad_item_attribute_config_is_rejected(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert key in str(err.value)


def test_attribute_table_pads_truncates_and_rejects_bad_ids():
    from train.recommender import attribute_table

    table, num_attributes = attribute_table({1: [3, 1], 3: [2, 5, 4], 9: [7]}, num_items=4, max_attributes=2)
    assert table.tolist() == [
        [0, 0],
        [3, 1],
        [0, 0],
        [2, 5],
        [0, 0],
    ]  # item 9 is not in the catalog; item 3 keeps 2 slots
    assert num_attributes == 5
    with pytest.raises(ValueError, match="item_attributes"):
        attribute_table({1: []}, num_items=4, max_attributes=2)
    with pytest.raises(ValueError, match="0 is padding"):
        attribute_table({1: [0, 2]}, num_items=4, max_attributes=2)


def test_catalog_attributes_are_brand_and_every_category_level(tmp_path, monkeypatch):
    import pyarrow as pa

    import data.inputs
    from core.layout import ArtifactLayout
    from train.recommender import catalog_attributes

    _write_split(tmp_path)
    products = pa.table(
        {
            "product_id": ["p1", "p2", "p3", "zzz"],
            "category": ["Toys > Puzzles", "Toys > Dolls", None, "Toys"],
            "brand": ["Acme", "Acme", None, "X"],
        }
    )
    monkeypatch.setattr(data.inputs, "load_products", lambda layout: products)
    attrs = catalog_attributes(ArtifactLayout(str(tmp_path)), NUM_ITEMS)
    assert set(attrs) == {1, 2, 3}  # "zzz" has no item id
    assert attrs[1][0] == attrs[2][0] and attrs[1][1] != attrs[2][1]  # shared "Toys", distinct sub-categories
    assert attrs[1][2] == attrs[2][2]  # same brand
    assert attrs[3] == []


def test_item_attributes_without_a_catalog_fail_before_training(tmp_path):
    from train.recommender import train_recommender

    _write_split(tmp_path)
    with pytest.raises(FileNotFoundError, match="item_attributes"):
        train_recommender(_cfg(tmp_path, "train.recommender.item_attributes=true"))


def test_attribute_embeddings_enter_input_and_output_and_survive_export():
    import torch

    from ml.sasrec import SASRec, SASRecConfig, sequence_loss
    from train.recommender import attribute_table

    table, num_attributes = attribute_table({i: [1 + i % 3, 4] for i in range(1, 21)}, num_items=20, max_attributes=4)
    torch.manual_seed(0)
    model = SASRec(
        SASRecConfig(
            num_items=20,
            max_len=8,
            hidden=16,
            num_heads=2,
            num_attributes=num_attributes,
            max_attributes=table.shape[1],
        )
    )
    model.set_item_attributes(torch.as_tensor(table))
    assert torch.all(model.item_table()[0] == 0)  # padding stays a zero vector
    seqs = torch.randint(1, 21, (16, 8))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    losses = []
    for _ in range(30):
        loss = sequence_loss(model(seqs[:, :-1]), seqs[:, 1:], model.item_table(), loss="ce")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert model.attr_emb.weight.grad.abs().sum() > 0 and losses[-1] < losses[0]
    # the serving path rebuilds the model from model_config.json + model.pt: same vectors, same scores
    loaded = SASRec(SASRecConfig(**model.cfg.to_dict()))
    loaded.load_state_dict(model.state_dict())
    model.eval(), loaded.eval()
    assert torch.equal(loaded.item_vectors(), model.item_vectors())
    assert torch.allclose(loaded.score_all(seqs[:2]), model.score_all(seqs[:2]))
    with pytest.raises(ValueError, match="shape"):
        model.set_item_attributes(torch.zeros(5, 2, dtype=torch.long))


def test_item_bias_scores_as_one_more_dimension_that_an_inner_product_index_serves():
    import faiss
    import torch

    from ml.sasrec import SASRec, SASRecConfig
    from train.evaluate import LooData
    from train.recommender import _log_counts

    loo = LooData.from_sequences([[1, 2, 2, 3, 4], [2, 5, 6]], num_items=7)
    counts = _log_counts(loo)  # train items: [1, 2, 2] and [2]
    assert np.allclose(counts, np.log1p([0, 1, 3, 0, 0, 0, 0, 0]))
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(num_items=7, max_len=4, hidden=8, num_heads=2, item_bias=True))
    model.set_item_bias(torch.as_tensor(counts))
    model.eval()
    seqs = torch.tensor([[0, 1, 2, 3], [0, 0, 5, 6]])
    plain = model.forward(seqs)[:, -1] @ model.item_table()[1:].T
    assert torch.allclose(model.score_all(seqs)[:, 1:], plain + torch.as_tensor(counts[1:]))
    # the exported vectors and the query carry the bias: an inner-product index ranks as score_all
    vectors = model.item_vectors().detach().numpy().astype(np.float32)
    assert vectors.shape == (7, 9)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    _, rows = index.search(model.predict(seqs).numpy().astype(np.float32), 7)
    assert (rows + 1).tolist() == model.score_all(seqs)[:, 1:].argsort(dim=1, descending=True).add(1).tolist()
    # and the bias is part of the state dict the serving path loads
    loaded = SASRec(SASRecConfig(**model.cfg.to_dict()))
    loaded.load_state_dict(model.state_dict())
    loaded.eval()
    assert torch.equal(loaded.score_all(seqs), model.score_all(seqs))
    with pytest.raises(ValueError, match="item_bias"):
        SASRec(SASRecConfig(num_items=7, max_len=4, hidden=8, num_heads=2)).set_item_bias(torch.zeros(8))


def test_prefix_rows_put_every_target_once_at_the_last_position():
    from train.recommender import training_rows

    plain = training_rows({"train_items": [[1, 2, 3, 4], [5], [6, 7]]}, max_len=3)
    assert plain["inputs"].tolist() == [[1, 2, 3], [0, 0, 6]] and plain["targets"].tolist() == [[2, 3, 4], [0, 0, 7]]
    rows = training_rows({"train_items": [[1, 2, 3, 4], [5], [6, 7]]}, max_len=2, prefixes=True)
    assert rows["inputs"].tolist() == [[0, 1], [1, 2], [2, 3], [0, 6]]  # left-padded, truncated to max_len
    assert rows["targets"].tolist() == [[0, 2], [0, 3], [0, 4], [0, 7]]  # padding targets carry no loss


def test_sampled_selection_with_bias_prefixes_and_summed_attributes_trains_and_exports(ray_local, tmp_path):
    from train.recommender import train_recommender

    _write_split(tmp_path)
    meta = train_recommender(
        _cfg(
            tmp_path,
            "train.recommender.epochs=3",
            "train.recommender.select_on=sampled_mrr",
            "train.recommender.item_bias=true",
            "train.recommender.prefixes=true",
            "train.recommender.item_attributes=true",
            "train.recommender.attribute_pooling=sum",
        ),
        item_attributes={i: [1 + i % 7, 8 + i % 3] for i in range(1, NUM_ITEMS + 1)},
        fail_once_at_epoch=1,  # and survives a restart
    )
    export = tmp_path / "models" / "recommender"
    curves = json.loads((export / "metrics.json").read_text())["curves"]
    assert [c["epoch"] for c in curves] == [0, 1, 2]
    assert meta["selected_on"] == "validation sampled_mrr"
    # the kept model is the epoch with the best sampled MRR, not the best full NDCG@10
    best = max(curves, key=lambda c: c["valid_sampled_mrr"])
    assert meta["best_epoch"] == best["epoch"] and meta["best_valid_score"] == best["valid_sampled_mrr"]
    assert np.load(export / "item_vectors.npy").shape == (NUM_ITEMS, 32 + 1)  # the bias column
    assert meta["test"]["sasrec"]["full"]["ndcg@10"] > meta["test"]["popularity"]["full"]["ndcg@10"]


def test_bad_selection_metric_is_rejected():
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["train.recommender.select_on=valid_loss"])
    assert "train.recommender.select_on" in str(err.value)
