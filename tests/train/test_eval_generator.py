"""Generator evaluation: metric helpers on hand-made outputs, and one real CLI run (vLLM, base vs
"fine-tuned") that writes the comparison report with ≥ 99% JSON validity under structured outputs."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from core.manifest import staged_dir, write_manifest
from tests.conftest import run_cli
from tests.train.generator_fixtures import write_tiny_corpora
from train.eval_generator import bleu_rouge, distinct_n, score_task, tokens


def test_cjk_aware_tokens_and_distinct_2():
    assert tokens("Blue denim 牛仔布") == ["blue", "denim", "牛", "仔", "布"]
    assert distinct_n(["a b c", "a b d"]) == pytest.approx(3 / 4)
    assert distinct_n([]) == 0.0


def test_bleu_and_rouge_score_chinese_too():
    same = bleu_rouge(["经典蓝色牛仔布夹克。"], ["经典蓝色牛仔布夹克。"])
    other = bleu_rouge(["红色棉质衬衫。"], ["经典蓝色牛仔布夹克。"])
    assert same["rougeL"] == pytest.approx(1.0) and same["bleu"] > 99
    assert other["rougeL"] < 0.3 and other["bleu"] < 10


def test_score_task_counts_validity_and_grounding():
    facts = json.dumps({"title": "Mug", "attributes": {"capacity": "350 ml"}})
    examples = [{"id": "pdp:a", "facts": facts, "reference": {"description": "Holds 350 ml."}}] * 2
    good = json.dumps({"title": "Mug", "highlights": ["capacity: 350 ml"], "description": "Holds 350 ml."})
    out = score_task("pdp", [good, "Sure! Here is the JSON"], examples, [])
    assert out["json_validity"] == 0.5 and out["unsupported_rate"] == 0.0
    cut = score_task("pdp", [good, '{"title": "Mug", "highl'], examples, [])
    assert cut["json_validity"] == 1.0 and cut["json_complete"] == 0.5  # closed, but counted as cut off
    bad = json.dumps({"title": "Mug", "highlights": [], "description": "Holds 500 ml."})
    assert score_task("pdp", [bad, good], examples, [])["outputs_with_unsupported"] == 0.5


def test_a_cut_off_structured_answer_is_closed():
    from ml.prompts import repair_pdp

    cut = '{"title":"牛仔夹克","highlights":["蓝色"],"description":"经典夹克。被实际上被称'
    assert repair_pdp(cut) == {"title": "牛仔夹克", "highlights": ["蓝色"], "description": "经典夹克。"}
    assert repair_pdp('{"title":"A","highl') == {"title": "A", "highlights": [], "description": ""}
    assert repair_pdp("not json") is None


def _fake_fine_tuned(base, out):
    """A committed export that is the base model (hard links): the report pipeline, not training, is under test."""
    with staged_dir(out) as staging:
        for f in base.iterdir():
            if f.is_file() and f.name != "shopgraph-manifest.json":
                os.link(f, staging / f.name) if os.stat(f).st_dev == os.stat(staging).st_dev else shutil.copy(
                    f, staging / f.name
                )
        write_manifest(staging, {"model": "generator", "model_version": "testversion0"})


def test_cli_compares_base_and_fine_tuned(models_dir, tmp_path):
    write_tiny_corpora(tmp_path)
    _fake_fine_tuned(models_dir / "smollm2-135m-instruct", tmp_path / "models" / "generator")
    proc = run_cli("train", "eval-generator", "--set", f"models.dir={models_dir}", "--set", f"artifacts.root={tmp_path}",
                   "--set", "models.engine.max_model_len=1024", "--set", "train.generator.eval.max_examples=2",
                   "--set", "train.generator.eval.max_new_tokens=128", timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = tmp_path / "reports" / "generator"
    report = json.loads((out / "eval.json").read_text())
    assert set(report["models"]) == {"base", "fine_tuned"} and report["model_version"] == "testversion0"
    for model in report["models"].values():
        pdp = model["tasks"]["pdp"]
        assert pdp["json_validity"] >= 0.99, pdp["per_output"]  # structured outputs
        for key in ("bleu", "rougeL", "distinct_2", "unsupported_rate", "mean_output_unsupported_rate"):
            assert pdp[key] is not None
        assert 0.0 <= pdp["unsupported_rate"] <= 1.0
        assert all("unsupported" in o for o in pdp["per_output"])
    assert "| model | task | n | BLEU | ROUGE-L |" in (out / "eval.md").read_text()
    assert "<table>" in (out / "eval.html").read_text()
    assert "fine_tuned  pdp" in proc.stdout
