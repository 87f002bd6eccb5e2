"""The evaluation harness (`shopgraph train evaluate`, cluster/evaluate.py): one metrics.json and
report.html with the recommender, ranker, generator and serving parts; parts whose model is
not trained are skipped with a line that says what to run; bad requests fail with exit != 0.

The full run uses the session's small real artifact root (sample data -> ... -> recommender ->
ranker, tests/conftest.py), copied so that nothing here changes it for other tests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cluster.cli import app
from cluster.evaluate import PARTS, EvaluationInputError, parse_parts, run_evaluation
from core.config import load_config
from tests.conftest import REPO

runner = CliRunner()


def _copy_root(serving_artifacts: list[str], dest: Path, *, without: tuple[str, ...] = ()) -> list[str]:
    """A private copy of the session's artifact root; returns overrides that point at it."""
    source = Path(next(o for o in serving_artifacts if o.startswith("artifacts.root=")).split("=", 1)[1])
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("ray-train"))
    for rel in without:
        shutil.rmtree(dest / rel)
    return [*(o for o in serving_artifacts if not o.startswith("artifacts.root=")), f"artifacts.root={dest}"]


def _fake_generator_export(root: Path) -> None:
    from core.manifest import staged_dir, write_manifest

    with staged_dir(root / "models" / "generator") as staging:
        (staging / "config.json").write_text("{}")
        write_manifest(staging, {"model": "generator", "model_version": "harnesstest0"})


def _fake_generator_report(cfg, *, model_dir, out_dir, **_):
    """What train.eval_generator.evaluate_generator returns, for canned outputs (its real vLLM
    path is tested in tests/train/test_eval_generator.py); checks what the harness asked for."""
    assert cfg.train.generator.eval.compare_base is False  # the fine-tuned model only
    assert cfg.train.generator.eval.max_examples == 3  # train.evaluation.generator_max_examples
    Path(out_dir).mkdir(parents=True)
    (Path(out_dir) / "eval.json").write_text("{}")
    task = {"examples": 3, "bleu": 12.5, "rougeL": 0.31, "distinct_2": 0.8, "json_validity": 1.0, "json_complete": 1.0,
            "unsupported_rate": 0.05, "mean_output_unsupported_rate": 0.04, "outputs_with_unsupported": 0.33,
            "per_output": [{"id": "x", "output": "...", "unsupported": [], "rate": 0.0}]}  # fmt: skip
    tuned = {"path": str(model_dir), "generate_seconds": 1.0, "tasks": {"pdp": task, "reasons": task}}
    return {"model_version": "harnesstest0", "models": {"fine_tuned": tuned}}


@pytest.mark.slow
def test_full_run_writes_every_part(serving_artifacts, tmp_path, monkeypatch):
    import train.eval_generator

    overrides = _copy_root(serving_artifacts, tmp_path / "root")
    root = tmp_path / "root"
    _fake_generator_export(root)
    monkeypatch.setattr(train.eval_generator, "evaluate_generator", _fake_generator_report)
    sizes = ["train.evaluation.serving_requests=30", "train.evaluation.generator_max_examples=3"]
    cfg = load_config(overrides=[*overrides, *sizes])
    lines: list[str] = []
    metrics = run_evaluation(cfg, echo=lines.append)

    out = root / "reports" / "evaluation"
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert metrics["parts"] == list(PARTS)
    assert all("skipped" not in metrics[p] for p in PARTS), {p: metrics[p].get("skipped") for p in PARTS}

    rec = metrics["recommender"]["results"]
    assert set(rec) == {"sasrec", "popularity", "cooccurrence"}
    for scores in rec.values():
        assert set(scores) == {"full", f"sampled_{cfg.train.evaluation.num_negatives}"}
        assert all(0 <= scores["full"][k] <= 1 for k in ("hr@10", "ndcg@10", "mrr"))
    assert metrics["recommender"]["curves"], "training curves of the export"

    # The ranker part re-runs the evaluation that ended ranker training, on the exports.
    trained = json.loads((root / "models" / "ranker" / "metrics.json").read_text())
    ranker = metrics["ranker"]
    assert ranker["users"] == trained["users"] and ranker["candidates"] == trained["candidates"]
    assert ranker["recall_at_candidates"] == pytest.approx(trained["recall_at_candidates"])
    for order in ("retrieval_order", "ranker"):
        assert ranker[order]["ndcg@10"] == pytest.approx(trained[order]["ndcg@10"], abs=0.01), order

    gen = metrics["generator"]
    assert gen["model_version"] == "harnesstest0" and set(gen["tasks"]) == {"pdp", "reasons"}
    assert "per_output" not in gen["tasks"]["pdp"]  # kept in the generator/ sub-report

    lat = metrics["serving"]["latency"]
    assert lat["n"] == 30 and 0 < lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert len(metrics["serving"]["samples_ms"]) == 30
    assert metrics["serving"]["responses_short_of_k"] == 0

    page = (out / "report.html").read_text()
    assert all(f'<section id="{p}">' in page for p in PARTS) and 'class="skipped"' not in page
    for png in ("recommender_metrics.png", "recommender_curves.png", "ranker_ndcg.png", "serving_latency.png"):
        assert (out / png).stat().st_size > 1000 and f'src="{png}"' in page
    assert [line.split(":")[0] for line in lines[:4]] == list(PARTS)
    assert "p50" in lines[3] and "vs retrieval order" in lines[1]


@pytest.mark.slow
def test_untrained_parts_are_skipped_with_what_to_run(serving_artifacts, tmp_path):
    overrides = _copy_root(serving_artifacts, tmp_path / "root", without=("models/ranker",))
    root = tmp_path / "root"
    args = [a for o in overrides for a in ("--set", o)]
    # The RayJob's entry point, as a Ray job runs it.
    proc = subprocess.run(
        [sys.executable, "-m", "cluster.evaluate", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    metrics = json.loads((root / "reports" / "evaluation" / "metrics.json").read_text())
    assert "skipped" not in metrics["recommender"]
    assert metrics["ranker"] == {"skipped": f"no ranker at {root / 'models' / 'ranker'}: run `shopgraph train ranker`"}
    generator = root / "models" / "generator"
    skip = f"no fine-tuned generator at {generator}: run `shopgraph train generator`"
    assert metrics["generator"] == {"skipped": skip}
    assert metrics["serving"]["skipped"].startswith("no ranker at")
    assert f"ranker: skipped: no ranker at {root / 'models' / 'ranker'}: run `shopgraph train ranker`" in proc.stdout
    assert "generator: skipped: no fine-tuned generator at" in proc.stdout
    page = (root / "reports" / "evaluation" / "report.html").read_text()
    assert page.count('class="skipped"') == 3 and "recommender_metrics.png" in page
    assert not (root / "reports" / "evaluation" / "serving_latency.png").exists()


def test_parts_are_parsed_in_harness_order():
    assert parse_parts(None) == list(PARTS)
    assert parse_parts("serving, recommender,serving") == ["recommender", "serving"]
    with pytest.raises(EvaluationInputError, match="unknown part 'rankr'"):
        parse_parts("recommender,rankr")


def test_unknown_part_is_rejected_before_anything_runs(tmp_path):
    result = runner.invoke(
        app, ["train", "evaluate", "--parts", "recommender,rankr", "--set", f"artifacts.root={tmp_path}"]
    )
    assert result.exit_code == 2
    assert "unknown part 'rankr' in --parts; choose from recommender,ranker,generator,serving" in result.output
    assert not (tmp_path / "reports").exists()


def test_missing_artifacts_root_is_an_error(tmp_path):
    missing = tmp_path / "nope"
    result = runner.invoke(app, ["train", "evaluate", "--set", f"artifacts.root={missing}"])
    assert result.exit_code == 1
    assert f"artifacts root {missing} does not exist" in result.output and "artifacts.root" in result.output
    assert not missing.exists()


def test_remote_artifacts_root_says_to_use_a_local_path():
    result = runner.invoke(app, ["train", "evaluate", "--set", "artifacts.root=s3://bucket/shopgraph"])
    assert result.exit_code == 1
    assert "set artifacts.root to a local" in result.output


def test_nothing_trained_fails_but_still_reports_the_skips(tmp_path):
    result = runner.invoke(
        app, ["train", "evaluate", "--set", f"artifacts.root={tmp_path}", "--parts", "recommender,ranker"]
    )
    assert result.exit_code == 1
    recommender = tmp_path / "models" / "recommender"
    assert f"recommender: skipped: no recommender at {recommender}: run `shopgraph train recommender`" in result.output
    assert "nothing was evaluated" in result.output
    metrics = json.loads((tmp_path / "reports" / "evaluation" / "metrics.json").read_text())
    assert metrics["generator"] == {"skipped": "not requested (--parts recommender,ranker)"}
    assert metrics["ranker"]["skipped"].startswith("no ranker at")
