"""The SASRec recipe on Ray Train: 2 CPU workers, loss falls, a worker failure resumes from
the checkpoint, the export is complete, and it beats popularity on planted structure."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cluster.config import ConfigError, load_config
from data.manifest import verify_dir
from tests.train.conftest import NUM_ITEMS, _cfg, _write_split

pytestmark = pytest.mark.slow
@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
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
    assert meta["scaling"]["num_workers"] == 2


def test_export_is_complete_and_loadable(trained):
    root, meta = trained
    export = root / "models" / "recommender"
    manifest = verify_dir(export, full=True)
    assert {"model.pt", "model_config.json", "item_vectors.npy", "metrics.json", "report.html", "curves.png"} <= set(manifest["files"])
    vectors = np.load(export / "item_vectors.npy")
    assert vectors.shape == (NUM_ITEMS, 32) and vectors.dtype == np.float32
    assert manifest["meta"]["test"]["sasrec"]["full"]["users"] == 400


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
    [("train.evaluation.ks=[0,10]", "train.evaluation.ks"), ("train.recommender.num_heads=3", "num_heads"), ("train.recommender.loss=mse", "train.recommender.loss")],
)
def test_bad_recommender_config_is_rejected(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert key in str(err.value)


def test_cli_without_a_split_says_what_to_run(tmp_path):
    from tests.conftest import run_cli

    result = run_cli("train", "recommender", "--set", f"artifacts.root={tmp_path}", timeout=120)
    assert result.returncode == 1
    assert "shopgraph data split" in result.stderr


def test_python_m_entry_point_rejects_bad_config():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "train.recommender", "--set", "train.recommender.epochs=0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "train.recommender.epochs" in result.stderr


def test_evaluate_entry_point_without_a_trained_model_says_what_to_run(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "train.evaluate", "--set", f"artifacts.root={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "shopgraph train recommender" in result.stderr
